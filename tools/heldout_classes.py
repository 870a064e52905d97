"""New classes without retraining, measured on the demo: the experiment behind docs/beyond-top1.md.

1. Train the demo on its first ``--trained`` classes (default 7, ``dataset.num_classes=7``): it
   never sees ``green wing``, ``blue wing`` or ``magenta wing``, the next three.
2. Write a gallery of ``--shots`` images each of the next two classes (green wing, blue wing),
   taken from the demo's *test* split, and its *val* split (the trained classes and the three
   held out, 40 images each with the recipe's sizes) as the images to classify. Both are draws
   the training never saw.
3. ``cncnn gallery build --holdout`` (the unknown threshold fitted on the gallery alone), then
   ``cncnn predict --gallery --gallery-mode extend`` and the model alone (``cncnn predict``).
4. Report top-1 on the two gallery classes and on the seven trained ones (gallery ranking and the
   model alone), and how often ``magenta wing`` (in no gallery) is reported as ``unknown``,
   beside how often known classes are.

Every step is a ``cncnn`` command a user could type; this script only writes the images and
counts. Run from the repository root: ``python tools/heldout_classes.py`` (the training takes a
few minutes on two CPU cores; an existing ``--work-dir`` with ``last.safetensors`` is reused).
Extra ``cncnn train`` options go after ``--``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from cncnn_cli.apis.gallery import load_gallery
from cncnn_cli.registry import load_plugins
from cncnn_cli.weights.checkpoint import read_checkpoint



def cncnn(*args: str) -> None:
    """Run one cncnn command as a user would, echoing it; stop on failure."""
    print("$ cncnn " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "cncnn_cli", *args], check=True)


def write_split(dataset_cfg: dict, universe: int, split: str, folder: Path, classes: list[str] | None,
                per_class: int | None) -> None:
    """The ``universe``-class demo's ``split`` as PNGs (lossless: the pixels the dataset yields) in
    ``folder/<class>/``, only ``classes`` when given, at most ``per_class`` each."""
    from cncnn_plugins.datasets.demo import Demo

    data = Demo(**{**dataset_cfg, "split": split, "num_classes": universe})
    counts: Counter = Counter()
    for index, (_, label) in enumerate(data.samples):
        name = data.classes[label]
        if (classes is not None and name not in classes) or (per_class is not None and counts[name] >= per_class):
            continue
        target = folder / name / f"{index:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        data.load_image(index, as_tensor=False).save(target)
        counts[name] += 1


#: Everything the script writes in ``--out``: a folder holding anything else is the user's, and refused.
OWN_FILES = {"gallery", "val", "gallery.safetensors", "extend.jsonl", "model_alone.jsonl", "report.json"}


def check_out(out: Path) -> None:
    """Stop (exit 2) before writing into a folder that holds files this script did not write."""
    problem = None
    if out.exists() and not out.is_dir():
        problem = f"--out {out}: not a folder"
    elif out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_FILES)
        if foreign:
            problem = f"--out {out} holds {foreign[0]!r}, which this script did not write"
    if problem:
        print(f"error: {problem}; give a new folder, e.g. work_dirs/heldout", file=sys.stderr)
        sys.exit(2)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def share(hits: int, total: int) -> float:
    return round(100.0 * hits / total, 2) if total else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trained", type=int, default=7, help="train on the demo's first N classes; the next two "
                        "are the gallery's, the one after them is in no gallery")
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/demo7"), help="the N-class training run")
    parser.add_argument("--out", type=Path, default=Path("work_dirs/heldout"), help="images, gallery, predictions")
    parser.add_argument("--shots", type=int, default=5, help="gallery images per new class")
    parser.add_argument("--holdout", type=float, default=0.2, help="gallery build --holdout (fits the threshold)")
    parser.add_argument("train_args", nargs="*", help="extra `cncnn train` options (after --)")
    args = parser.parse_args()

    from cncnn_plugins.datasets.demo import class_names

    universe = args.trained + 3
    names = class_names(universe)
    new_classes, unseen = names[args.trained:args.trained + 2], names[args.trained + 2]
    check_out(args.out)
    checkpoint = args.work_dir / "last.safetensors"
    if not checkpoint.is_file():
        cncnn("train", "demo", "--work-dir", str(args.work_dir), "--cfg-options",
              f"dataset.num_classes={args.trained}", *args.train_args)
    load_plugins()
    info, _ = read_checkpoint(checkpoint)
    # the run's demo set (sizes, seed), with the held-out classes
    dataset_cfg = {k: v for k, v in (info.dataset or {}).items() if k not in ("type", "data_root", "num_classes")}
    args.out.mkdir(parents=True, exist_ok=True)
    gallery_root, images_root = args.out / "gallery", args.out / "val"
    if not gallery_root.is_dir():
        write_split(dataset_cfg, universe, "test", gallery_root, new_classes, args.shots)
    if not images_root.is_dir():
        write_split(dataset_cfg, universe, "val", images_root, None, None)
    gallery = args.out / "gallery.safetensors"
    cncnn("gallery", "build", str(gallery_root), "--checkpoint", str(checkpoint), "--out", str(gallery),
          "--holdout", str(args.holdout), "--workers", "0")
    extended, alone = args.out / "extend.jsonl", args.out / "model_alone.jsonl"
    cncnn("predict", str(images_root), "--checkpoint", str(checkpoint), "--gallery", str(gallery), "--out", str(extended))
    cncnn("predict", str(images_root), "--checkpoint", str(checkpoint), "--out", str(alone))

    def truth(row: dict) -> str:
        return Path(row["image"]).parent.name

    rows, plain = read_jsonl(extended), read_jsonl(alone)
    trained_rows = [r for r in rows if truth(r) not in (*new_classes, unseen)]
    new_rows = [r for r in rows if truth(r) in new_classes]
    unseen_rows = [r for r in rows if truth(r) == unseen]
    plain_trained = [r for r in plain if truth(r) not in (*new_classes, unseen)]
    report = {
        "checkpoint": str(checkpoint), "trained_classes": args.trained, "gallery_classes": new_classes,
        "unseen_class": unseen, "gallery_images_per_class": args.shots,
        "unknown_threshold": load_gallery(gallery).unknown_threshold,
        "new_classes_top1": share(sum(r["predictions"][0]["label"] == truth(r) for r in new_rows), len(new_rows)),
        "new_classes_images": len(new_rows),
        "trained_classes_top1_extend": share(sum(r["predictions"][0]["label"] == truth(r) for r in trained_rows),
                                             len(trained_rows)),
        "trained_classes_top1_model_alone": share(sum(r["predictions"][0]["label"] == truth(r) for r in plain_trained),
                                                  len(plain_trained)),
        "trained_classes_images": len(trained_rows),
        "unseen_class_unknown": share(sum(r["unknown"] for r in unseen_rows), len(unseen_rows)),
        "unseen_class_images": len(unseen_rows),
        "unseen_class_top1_labels": dict(Counter(r["predictions"][0]["label"] for r in unseen_rows).most_common(3)),
        "known_classes_unknown": share(sum(r["unknown"] for r in trained_rows + new_rows),
                                       len(trained_rows) + len(new_rows)),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
