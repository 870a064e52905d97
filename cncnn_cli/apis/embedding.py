"""Embeddings of images or of a dataset split, streamed into a ``.npy`` or ``.safetensors`` file.

    from cncnn_cli.apis.inference import Predictor
    vectors = [e.vector for e in Predictor.from_checkpoint("best.safetensors").embed(["a.jpg", "b.jpg"])]

The matrix is written row by row into a raw part file beside the output (memory stays flat
on inputs of any length), then framed as ``.npy`` (numpy's own writer) or ``.safetensors``
(one tensor ``embeddings``, N×D float32) and renamed into place; its ``.jsonl`` index (one line
per row: ``index``, ``image`` and, from a dataset, ``label``) is written the same way.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cncnn_cli.apis.inference import Embedded, Predictor
from cncnn_cli.config.defaults import DEFAULT_WORKERS
from cncnn_cli.data.collate import collate
from cncnn_cli.data.dataset import FineGrainedDataset, build_dataset
from cncnn_cli.errors import CncnnError
from cncnn_cli.evaluation.evaluate import _dataset_config, _where
from cncnn_cli.models.embedding import EmbeddingCapture
from cncnn_cli.utils.atomic import atomic_write, write_error

OUT_FORMATS = (".npy", ".safetensors")


@dataclass
class LabelledEmbedding(Embedded):
    """A dataset image's embedding with its class name."""

    label: str | None = None
    #: The class's index in the dataset.
    label_index: int | None = None

    def to_json(self) -> dict:
        return {**super().to_json(), "label": self.label}


def iter_dataset_embeddings(predictor: Predictor, checkpoint: str | Path, dataset: str | None,
                            data_root: str | None, split: str, batch_size: int = 32,
                            workers: int = DEFAULT_WORKERS) -> tuple[FineGrainedDataset, Iterator[LabelledEmbedding]]:
    """(the dataset, its images' embeddings in dataset order) of a split; the dataset is the
    checkpoint's unless ``dataset``/``data_root`` say otherwise. Unreadable images are skipped
    (the loader warns about each)."""
    cfg = _dataset_config(checkpoint, dict(predictor.info.dataset or {}), dataset, data_root)
    options = dict(cfg)
    data = build_dataset(options.pop("type"), options.pop("data_root"), split, predictor.transform, **options)
    if len(data) == 0:
        raise CncnnError(f"{_where(cfg)}: split '{split}' has no images")
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        pin_memory=predictor.device.type == "cuda")

    def stream() -> Iterator[LabelledEmbedding]:
        with EmbeddingCapture(predictor.model, predictor.embedding, len(predictor.classes)) as capture, \
                torch.inference_mode():
            for batch in loader:
                if batch["inputs"].shape[0] == 0:
                    continue
                predictor.model.infer({"inputs": batch["inputs"].to(predictor.device)})
                vectors = capture.take().cpu()
                for path, label, vector in zip(batch["paths"], batch["data_samples"].tolist(), vectors):
                    yield LabelledEmbedding(image=path, vector=vector, label=data.classes[label], label_index=label)

    return data, stream()


class EmbeddingFile:
    """``--out FILE.npy|FILE.safetensors`` and its ``FILE.jsonl`` index, streamed and committed atomically.

    Rows go to ``FILE.part`` as they come; :meth:`commit` frames them, renames the result over
    ``FILE`` and writes the index. Until then an earlier ``FILE`` is untouched; :meth:`discard`
    (a failure) removes the part file.
    """

    def __init__(self, out: Path) -> None:
        if out.suffix.lower() not in OUT_FORMATS:
            raise CncnnError(f"--out {out}: expected a .npy or .safetensors file")
        if out.is_dir():
            raise CncnnError(f"--out {out} is a folder; give a file, e.g. {out / 'embeddings.npy'}")
        self.out, self.index = out, out.with_suffix(".jsonl")
        self.part = out.with_name(out.name + ".part")
        self.rows, self.width, self.lines = 0, None, []
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.stream = open(self.part, "wb")
        except OSError as exc:
            raise CncnnError(f"--out {out}: cannot write ({exc.strerror or exc})") from None

    def write(self, entry: Embedded) -> None:
        """Append one image's row (an entry with an error gets an index line only, no row)."""
        if entry.error is not None:
            self.lines.append(json.dumps(entry.to_json()))
            return
        vector = entry.vector.to(torch.float32).numpy()
        self.width = self.width or len(vector)
        line = {"index": self.rows, **{k: v for k, v in entry.to_json().items() if k != "embedding"}}
        self.lines.append(json.dumps(line))
        try:
            self.stream.write(vector.tobytes())
        except OSError as exc:
            self._fail(exc)
        self.rows += 1

    def commit(self, metadata: dict[str, str]) -> None:
        """Frame the rows (``metadata`` goes into a .safetensors header) and write the index."""
        try:
            self.stream.close()
            with atomic_write(self.out) as tmp:
                if self.out.suffix.lower() == ".npy":
                    self._frame_npy(tmp)
                else:
                    self._frame_safetensors(tmp, metadata)
            with atomic_write(self.index) as tmp:
                tmp.write_text("".join(line + "\n" for line in self.lines), encoding="utf-8")
        except OSError as exc:
            self._fail(exc)
        finally:
            self.part.unlink(missing_ok=True)

    def discard(self) -> None:
        self.stream.close()
        self.part.unlink(missing_ok=True)

    def _frame_npy(self, path: Path) -> None:
        rows = np.memmap(self.part, np.float32, "r", shape=(self.rows, self.width or 0)) if self.rows else \
            np.zeros((0, 0), np.float32)
        matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=rows.shape)
        for start in range(0, self.rows, 4096):
            matrix[start:start + 4096] = rows[start:start + 4096]
        matrix.flush()
        del matrix

    def _frame_safetensors(self, path: Path, metadata: dict[str, str]) -> None:
        """The safetensors layout (u64 header length, JSON header padded to 8 bytes, raw data), written
        around the part file so that the matrix never has to be in memory at once."""
        shape = [self.rows, self.width or 0]
        header = {"embeddings": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4 * shape[0] * shape[1]]},
                  "__metadata__": metadata}
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with open(path, "wb") as handle, open(self.part, "rb") as rows:
            handle.write(struct.pack("<Q", len(text)) + text)
            shutil.copyfileobj(rows, handle, 1 << 20)
            handle.flush()
            os.fsync(handle.fileno())

    def _fail(self, exc: OSError) -> None:
        self.discard()
        raise write_error(self.out, exc, instead="choose another --out") from None
