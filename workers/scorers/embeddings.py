"""The embeddings a ``clip`` run keeps (``keep_embeddings: true``): collected per batch by the scorer, drained
per chunk by the task, which writes them with :func:`backend.queue.embeddings.write_chunk` before committing
the chunk's scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from backend.queue.embeddings import write_chunk


class KeptEmbeddings:
    """Per sample id: its image embedding (mean of its images' unit embeddings) and text embedding, float16."""

    def __init__(self) -> None:
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, sample_ids: list[int], image: torch.Tensor, text: torch.Tensor) -> None:
        img32 = image.detach().to("cpu", torch.float32).numpy()
        txt32 = text.detach().to("cpu", torch.float32).numpy()
        img, txt = compensated_f16(img32, txt32, (img32.astype(np.float64) * txt32).sum(1))
        for k, sid in enumerate(sample_ids):
            self._rows[int(sid)] = (img[k], txt[k])

    def __len__(self) -> int:
        return len(self._rows)

    def take(self, sample_ids: set[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, image [n, d], text [n, d]) of the kept rows (only ``sample_ids`` when given), forgetting them."""
        ids = sorted(i for i in self._rows if sample_ids is None or i in sample_ids)
        rows = [self._rows.pop(i) for i in ids]
        if not rows:
            return np.empty(0, np.int64), np.empty((0, 0), np.float16), np.empty((0, 0), np.float16)
        return np.asarray(ids, np.int64), np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

    def clear(self) -> None:
        self._rows.clear()


def compensated_f16(
    image: np.ndarray, text: np.ndarray, target: np.ndarray, passes: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Both rounded to float16, with the image vector's components of largest text weight nudged (by a few
    float16 steps) so that image . text reproduces ``target`` (the run's similarity, unscaled).

    Plain rounding moves the dot product by up to ~1e-4 for small embeddings (32-d: the tiny test model), as
    much as the scores' own tolerance; compensating keeps it <= ~1e-5, so the kept vectors reproduce the scores.
    """
    img = image.astype(np.float16)
    txt = text.astype(np.float16)
    rows = np.arange(img.shape[0])
    t64 = txt.astype(np.float64)
    n, d = img.shape
    passes = min(passes, d)
    # Candidates: the component of largest text weight in each of `passes` slices of the vector (cheaper than
    # a partial sort over d), largest first.
    width = d // passes
    a = np.abs(t64[:, : width * passes]).reshape(n, passes, width)
    top = a.argmax(axis=2) + np.arange(passes) * width
    order = np.take_along_axis(top, np.argsort(-np.take_along_axis(np.abs(t64), top, axis=1), axis=1), axis=1)
    resid = target - (img.astype(np.float64) * t64).sum(1)  # updated per nudge: O(n) a pass, not O(n d)
    for k in range(passes):
        j = order[:, k]
        tj = t64[rows, j]
        safe = np.abs(tj) > 1e-3
        old = img[rows, j].astype(np.float64)
        new = (old + np.where(safe, resid / np.where(safe, tj, 1.0), 0.0)).astype(np.float16)
        img[rows, j] = new
        resid -= (new.astype(np.float64) - old) * tj
    return img, txt


def image_means(img: torch.Tensor, owner: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Per sample, the mean of its images' unit embeddings (its dot product with the text is ``similarity``)."""
    n = len(counts)
    out = torch.zeros(n, img.shape[1], device=img.device, dtype=img.dtype).index_add_(0, owner, img)
    return out / torch.tensor(counts, device=img.device, dtype=img.dtype)[:, None]


def write_kept(kept: KeptEmbeddings, folder: Path, sample_ids: set[int]) -> int:
    """Write the kept rows of ``sample_ids`` as one chunk file; the number of rows written."""
    ids, image, text = kept.take(sample_ids)
    if ids.size:
        write_chunk(folder, ids, image, text)
    return int(ids.size)
