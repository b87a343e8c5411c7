"""Unit float32 rows of kept embeddings, a block at a time: 1M x 768 float32 is 3 GB, the float16 store half."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from backend.queue.embeddings import Embeddings

BLOCK = 65_536


def rows(emb: Embeddings, source: str, which: np.ndarray | None, mean: np.ndarray | None = None) -> np.ndarray:
    """Unit float32 rows; with ``mean``, the rows minus it, normalised again (centred cosines)."""
    m = emb.matrix(source, which)
    if mean is not None:
        m -= mean
        norm = np.linalg.norm(m, axis=1, keepdims=True)
        np.divide(m, norm, out=m, where=norm > 0)
    return m


def mean_row(emb: Embeddings, source: str) -> np.ndarray:
    """The mean of the unit rows (the direction every CLIP embedding shares: the "cone" of the space)."""
    total = None
    for _, m in blocks(emb, source):
        s = m.sum(axis=0, dtype=np.float64)
        total = s if total is None else total + s
    return (total / max(len(emb), 1)).astype(np.float32) if total is not None else np.zeros(0, np.float32)


def blocks(
    emb: Embeddings, source: str, block: int = BLOCK, mean: np.ndarray | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, unit float32 rows) over the whole matrix."""
    for i in range(0, len(emb), block):
        yield i, rows(emb, source, np.arange(i, min(i + block, len(emb))), mean)


def subsample(emb: Embeddings, source: str, n: int, seed: int, mean: np.ndarray | None = None) -> np.ndarray:
    """``n`` random unit rows (all when fewer), float32, in row order."""
    if n >= len(emb):
        return rows(emb, source, None, mean)
    which = np.sort(np.random.default_rng(seed).choice(len(emb), size=n, replace=False))
    return rows(emb, source, which, mean)
