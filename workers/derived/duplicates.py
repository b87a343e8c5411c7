"""Near-duplicate groups: a faiss index over unit embeddings, each sample's neighbours with cosine >= threshold,
joined transitively (union-find); the group keeps its lowest sample id (rank 0)."""

from __future__ import annotations

from typing import Any

import numpy as np

from backend.queue.embeddings import Embeddings
from workers.derived.blocks import blocks, mean_row, subsample

EXACT_UP_TO = 50_000  # brute force (exact) below this many rows; an IVF index above
NPROBE = 16


def build_index(emb: Embeddings, source: str, seed: int = 0, mean: np.ndarray | None = None) -> Any:
    """Inner-product index over the unit rows: exact for small sets, IVF with float16 storage for large ones
    (the stored embeddings are float16: nothing is lost)."""
    import faiss

    d = emb.matrix(source, np.arange(min(1, len(emb)))).shape[1]
    n = len(emb)
    index: Any
    if n <= EXACT_UP_TO:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(np.sqrt(n))  # 1,000 lists at 1M; 16 probed: a near-copy sits in or next to its list
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        index.train(subsample(emb, source, min(n, nlist * 40), seed, mean))
        index.nprobe = NPROBE
    for _, m in blocks(emb, source, mean=mean):
        index.add(np.ascontiguousarray(m))
    return index


def find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


def groups(emb: Embeddings, source: str, threshold: float, max_neighbours: int, center: bool = False) -> np.ndarray:
    """Per row, the row index of its group's representative (its lowest row = lowest sample id). With
    ``center``, cosines are taken after removing the mean embedding (see DuplicatesParams.center)."""
    n = len(emb)
    parent = np.arange(n, dtype=np.int64)
    if n < 2:
        return parent
    mean = mean_row(emb, source) if center else None
    index = build_index(emb, source, mean=mean)
    k = min(max_neighbours + 1, n)
    for i, m in blocks(emb, source, block=16_384, mean=mean):
        sims, nbrs = index.search(np.ascontiguousarray(m), k)
        rows, cols = np.nonzero((sims >= threshold) & (nbrs >= 0))
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            a, b = find(parent, i + r), find(parent, int(nbrs[r, c]))
            if a != b:
                parent[max(a, b)] = min(a, b)  # the lower row is the root: the group keeps its first sample
    return np.fromiter((find(parent, i) for i in range(n)), dtype=np.int64, count=n)


def ranks(roots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank within its group in row order, 0 = the kept one; group size) per row."""
    n = roots.size
    order = np.lexsort((np.arange(n), roots))
    sorted_roots = roots[order]
    starts = np.searchsorted(sorted_roots, sorted_roots, side="left")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts
    size = np.bincount(roots, minlength=n)[roots]
    return rank, size
