"""Galleries: new classes without retraining, by nearest class mean in the checkpoint's embedding space.

A gallery is built from ImageFolder-style class folders (``ROOT/<class>/<image>``, any number of
images each, down to one). It stores every image's embedding with its path, and each class's mean
(L2-normalised). It also stores the means of the checkpoint's own classes, embedded from the
training split of its dataset, so that ``extend`` compares every class, trained or new, the same
way: the cosine similarity of the image's embedding to the class mean. The classifier's logits
are not mixed in: on a class it never saw it is confidently wrong, and its scores are not on the
scale of a similarity.

``replace`` ranks the gallery classes alone. An image whose best similarity is below the unknown
threshold is reported as ``unknown``. ``build_gallery(holdout=F)`` fits that threshold: it holds
out F of each class's images, and takes the similarity to their own class mean that
:data:`ACCEPT_RATE` of them reach.

A gallery is tied to the weights it was embedded with (a fingerprint of them) and to the
embedding the checkpoint names; another checkpoint's gallery is refused.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cncnn_cli.apis.embedding import iter_dataset_embeddings
from cncnn_cli.apis.inference import Embedded, Prediction, Predictor
from cncnn_cli.data.images import iter_images, list_folder
from cncnn_cli.engine.protocol import stratified_holdout
from cncnn_cli.errors import CncnnError, first_line
from cncnn_cli.utils.atomic import atomic_write

FORMAT = "cncnn-gallery"
MODES = ("extend", "replace")
#: The share of held-out images of known classes that the fitted unknown threshold accepts.
ACCEPT_RATE = 0.95


@dataclass
class Gallery:
    classes: list[str]
    #: C×D L2-normalised class means.
    means: torch.Tensor
    #: N×D embeddings of the gallery images, their class indices and paths.
    embeddings: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    embedding: str
    fingerprint: str
    #: K×D means of the checkpoint's own classes (None: its training split was not available).
    trained_means: torch.Tensor | None = None
    unknown_threshold: float | None = None


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the model's weights (names, shapes and values): which checkpoint embedded a gallery.
    Calibrating a checkpoint keeps its weights, so its galleries stay valid."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def class_means(embeddings: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    sums = torch.zeros(count, embeddings.shape[1], dtype=torch.float64).index_add_(0, labels, embeddings.double())
    return F.normalize(sums, dim=1).float()


def class_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """``(class name, images)`` of each sub-folder of ``root``; an empty one is an error (exit 2)."""
    if not root.is_dir():
        raise CncnnError(f"{root}: not a folder; give a folder of class folders (ROOT/<class>/<image>)")
    folders = [path for path, info in list_folder(root, suffixes=()) if path.is_dir()]
    if not folders:
        raise CncnnError(f"{root}: no class folders; expected ROOT/<class>/<image>, one folder per class")
    found = []
    for folder in folders:
        images = list(iter_images(folder))
        if not images:
            raise CncnnError(f"{folder}: an empty class folder; put at least one image in it or remove it")
        found.append((folder.name, images))
    return found


def build_gallery(predictor: Predictor, root: str | Path, out: str | Path, checkpoint: str | Path,
                  dataset: str | None = None, data_root: str | None = None, holdout: float | None = None,
                  seed: int = 0, batch_size: int = 32, workers: int = 0) -> Gallery:
    """Embed the class folders under ``root`` (and the checkpoint's training split, for ``extend``) into ``out``."""
    root, out = Path(root), Path(out)
    if out.suffix.lower() != ".safetensors":
        raise CncnnError(f"--out {out}: expected a .safetensors file")
    if holdout is not None and not 0 < holdout < 1:
        raise CncnnError(f"--holdout {holdout}: expected a fraction between 0 and 1 (e.g. 0.2)")
    folders = class_folders(root)
    paths = [path for _, images in folders for path in images]
    labels = [label for label, (_, images) in enumerate(folders) for _ in images]
    kept, rows = [], []
    for entry, label in zip(predictor.iter_embed(paths, batch_size), labels):
        if entry.error is not None:
            raise CncnnError(f"gallery image {entry.error}; fix or remove it")
        rows.append(entry.vector)
        kept.append(label)
    embeddings, label_tensor = torch.stack(rows), torch.tensor(kept)
    threshold = None if holdout is None else _fit_threshold(embeddings, label_tensor, len(folders), holdout, seed)
    trained = _trained_means(predictor, checkpoint, dataset, data_root, batch_size, workers)
    gallery = Gallery([name for name, _ in folders], class_means(embeddings, label_tensor, len(folders)), embeddings,
                      label_tensor, [str(p) for p in paths], predictor.embedding, weights_fingerprint(predictor.model),
                      trained, threshold)
    save_gallery(gallery, out)
    return gallery


def _fit_threshold(embeddings: torch.Tensor, labels: torch.Tensor, count: int, holdout: float, seed: int) -> float:
    keep, held = stratified_holdout(labels.tolist(), holdout, seed)
    if not held:
        raise CncnnError(f"--holdout {holdout} holds out no image: it needs classes of two or more images "
                         f"(each keeps at least one); raise it or add images")
    means = class_means(embeddings[keep], labels[keep], count)
    similarity = (embeddings[held] * means[labels[held]]).sum(1)
    return float(torch.quantile(similarity.double(), 1 - ACCEPT_RATE))


def _trained_means(predictor: Predictor, checkpoint: str | Path, dataset: str | None, data_root: str | None,
                   batch_size: int, workers: int) -> torch.Tensor | None:
    """The means of the checkpoint's classes over its training split; None when it names no dataset."""
    if not (predictor.info.dataset or {}).get("type") and dataset is None:
        return None
    data, entries = iter_dataset_embeddings(predictor, checkpoint, dataset, data_root, "train", batch_size, workers)
    count = len(predictor.classes)
    if len(data.classes) != count:
        raise CncnnError(f"{predictor.source} predicts {count} classes but the training split of the dataset has "
                         f"{len(data.classes)}; pass the checkpoint's own dataset with --dataset/--data-root")
    rows, labels = [], []
    for entry in entries:
        rows.append(entry.vector)
        labels.append(entry.label_index)
    missing = sorted(set(range(count)) - set(labels))
    if missing:
        raise CncnnError(f"the training split has no readable image of class {data.classes[missing[0]]!r}; "
                         f"every trained class needs a mean for --gallery-mode extend")
    return class_means(torch.stack(rows), torch.tensor(labels), count)


def save_gallery(gallery: Gallery, path: Path) -> None:
    tensors = {"means": gallery.means, "embeddings": gallery.embeddings, "labels": gallery.labels}
    if gallery.trained_means is not None:
        tensors["trained_means"] = gallery.trained_means
    metadata = {"format": FORMAT, "classes": json.dumps(gallery.classes), "paths": json.dumps(gallery.paths),
                "embedding": gallery.embedding, "fingerprint": gallery.fingerprint,
                "unknown_threshold": json.dumps(gallery.unknown_threshold)}
    with atomic_write(path, errors=(OSError, SafetensorError)) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_gallery(path: str | Path) -> Gallery:
    path = Path(path)
    if not path.is_file():
        raise CncnnError(f"--gallery {path}: no such file; build one with `cncnn gallery build ROOT --out {path}`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CncnnError(f"--gallery {path}: not a cncnn gallery; build one with `cncnn gallery build`")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        return Gallery(json.loads(meta["classes"]), tensors["means"], tensors["embeddings"], tensors["labels"],
                       json.loads(meta["paths"]), meta["embedding"], meta["fingerprint"], tensors.get("trained_means"),
                       json.loads(meta.get("unknown_threshold", "null")))
    except CncnnError:
        raise
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise CncnnError(f"--gallery {path}: not a readable cncnn gallery ({first_line(exc)}); rebuild it") from None


class GalleryPredictor:
    """Ranks classes by the cosine similarity of an image's embedding to each class mean.

    ``extend``: the checkpoint's classes and the gallery's; ``replace``: the gallery's alone.
    ``unknown_threshold`` (default: the gallery's fitted one, if any) marks an image unknown when
    its best similarity is below it.
    """

    def __init__(self, predictor: Predictor, gallery: Gallery, mode: str = "extend",
                 unknown_threshold: float | None = None, source: str | Path = "the gallery") -> None:
        if mode not in MODES:
            raise CncnnError(f"--gallery-mode {mode}: expected extend or replace")
        if gallery.fingerprint != weights_fingerprint(predictor.model) or gallery.embedding != predictor.embedding:
            raise CncnnError(f"--gallery {source} was built with another checkpoint (embedding {gallery.embedding}, "
                             f"weights {gallery.fingerprint[:12]}) than {predictor.source} (embedding "
                             f"{predictor.embedding}, weights {weights_fingerprint(predictor.model)[:12]}); rebuild it "
                             f"with `cncnn gallery build ROOT --checkpoint {predictor.source}`")
        if mode == "replace" and len(gallery.classes) < 2:
            raise CncnnError(f"--gallery {source} has a single class ({gallery.classes[0]}): with --gallery-mode replace "
                             f"every image would be that class; add class folders, or use --gallery-mode extend")
        if mode == "extend":
            if gallery.trained_means is None:
                raise CncnnError(f"--gallery {source} holds no means of the checkpoint's classes (its dataset was not "
                                 f"available when it was built); rebuild it with --dataset/--data-root, or use "
                                 f"--gallery-mode replace")
            shared = sorted(set(predictor.classes) & set(gallery.classes))
            if shared:
                raise CncnnError(f"--gallery {source}: {', '.join(shared[:3])}{' …' if len(shared) > 3 else ''} "
                                 f"is already a class of {predictor.source}; with --gallery-mode extend a name must "
                                 f"mean one class: rename the gallery's folder, or use --gallery-mode replace")
            self.classes = [*predictor.classes, *gallery.classes]
            self.means = torch.cat([gallery.trained_means, gallery.means])
        else:
            self.classes, self.means = list(gallery.classes), gallery.means
        self.predictor, self.mode = predictor, mode
        self.trained = len(predictor.classes) if mode == "extend" else 0
        self.threshold = gallery.unknown_threshold if unknown_threshold is None else unknown_threshold

    def iter_predict(self, images: Iterable, topk: int = 5, batch_size: int = 16) -> Iterator[Prediction]:
        """Like :meth:`Predictor.iter_predict`; scores are cosine similarities in [-1, 1], not probabilities."""
        k = max(1, min(topk, len(self.classes)))
        items = (Embedded(image=i.image, error=i.error) if isinstance(i, Prediction) else i for i in images)
        for entry in self.predictor.iter_embed(items, batch_size):
            if entry.error is not None:
                yield Prediction(image=entry.image, error=entry.error)
                continue
            scores, indices = (self.means @ entry.vector).topk(k)
            predictions = [{"label": self.classes[i], "index": i, "score": s,
                            "source": "trained" if i < self.trained else "gallery"}
                           for s, i in zip(scores.tolist(), indices.tolist())]
            unknown = None if self.threshold is None else scores[0].item() < self.threshold
            yield Prediction(image=entry.image, predictions=predictions, unknown=unknown)
