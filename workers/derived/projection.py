"""2D maps of embeddings: PCA to ``pca_dims`` (fitted on a sample, applied block by block), then UMAP or PaCMAP.

A seeded UMAP lays points out on one thread; fitted on every one of 1M points it was extrapolated at 11-20 min on
2 cores (233 s at 200k), at or past the 15-min budget, with its memory growing with n. So the map
is fitted on at most ``fit_rows`` seeded random rows and every other row is placed where UMAP's own ``transform``
starts a new point: the membership-weighted mean of its nearest fitted neighbours' coordinates (in the PCA space,
found with a faiss IVF index). Clusters and neighbourhoods of the fitted map carry over; what is lost is the fine
structure among the placed points themselves.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from backend.queue.embeddings import Embeddings
from workers.derived.blocks import blocks, subsample

PCA_FIT_ROWS = 50_000
EXACT_PLACEMENT_ROWS = 20_000  # up to this many fitted rows, placement searches them all
PLACEMENT_PROBES = 16


def pca_reduce(emb: Embeddings, source: str, dims: int, seed: int) -> np.ndarray:
    """float32 [n, min(dims, d)]: rows projected on the top principal axes of a sample of them."""
    fit = subsample(emb, source, PCA_FIT_ROWS, seed)
    dims = min(dims, fit.shape[1], max(2, fit.shape[0] - 1))
    mean = fit.mean(axis=0)
    # The top right-singular vectors of the centred sample: the principal axes.
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    w = vt[:dims].T.astype(np.float32)
    out = np.empty((len(emb), dims), dtype=np.float32)
    for i, m in blocks(emb, source):
        out[i : i + len(m)] = (m - mean) @ w
    return out


def project(
    emb: Embeddings,
    source: str,
    method: str,
    n_neighbors: int,
    min_dist: float,
    pca_dims: int,
    seed: int,
    say: Callable[[str], None] = lambda _: None,
    fit_rows: int | None = None,
) -> np.ndarray:
    """float32 [n, 2] map coordinates; with ``fit_rows`` < n, fitted on that many rows and the rest placed."""
    n = len(emb)
    if n < 4:  # too few for a neighbour graph: the first two principal axes
        return pca_reduce(emb, source, 2, seed)[:, :2] if n else np.empty((0, 2), np.float32)
    say(f"PCA to {pca_dims} dimensions")
    x = pca_reduce(emb, source, pca_dims, seed)
    if fit_rows is None or fit_rows >= n:
        return fit_map(x, method, n_neighbors, min_dist, seed, say)
    fitted = np.zeros(n, dtype=bool)
    fitted[np.random.default_rng(seed).choice(n, size=fit_rows, replace=False)] = True
    xy = np.empty((n, 2), dtype=np.float32)
    xy[fitted] = fit_map(x[fitted], method, n_neighbors, min_dist, seed, say)
    say(f"placing {n - fit_rows} points by their nearest fitted neighbours")
    xy[~fitted] = place(x[fitted], xy[fitted], x[~fitted], n_neighbors)
    return xy


def place(fit_x: np.ndarray, fit_xy: np.ndarray, new_x: np.ndarray, k: int) -> np.ndarray:
    """float32 [len(new_x), 2]: each new row at the weighted mean of its ``k`` nearest fitted rows' coordinates.

    The weights are UMAP's fuzzy memberships, ``exp(-(d - d_nearest) / sigma)`` with ``sigma`` the mean excess
    distance of the row's neighbours (umap-learn's ``transform`` initialises new points the same way)."""
    import faiss

    m, d = fit_x.shape
    k = max(1, min(k, m))
    index: Any
    if m <= EXACT_PLACEMENT_ROWS:
        index = faiss.IndexFlatL2(d)
    else:
        nlist = int(np.sqrt(m))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.cp.seed = 0
        index.train(np.ascontiguousarray(fit_x))
        index.nprobe = PLACEMENT_PROBES
    index.add(np.ascontiguousarray(fit_x))
    out = np.empty((len(new_x), 2), dtype=np.float32)
    for i in range(0, len(new_x), 65_536):
        dist2, nbr = index.search(np.ascontiguousarray(new_x[i : i + 65_536]), k)
        dist = np.sqrt(np.maximum(dist2, 0.0))
        found = nbr >= 0  # an IVF search can come back short when the probed lists hold fewer than k rows
        nbr = np.where(found, nbr, nbr.max(axis=1, keepdims=True).clip(min=0))
        excess = np.where(found, dist - dist[:, :1], np.inf)
        sigma = np.where(found, excess, 0.0).sum(axis=1, keepdims=True) / np.maximum(found.sum(1, keepdims=True), 1)
        w = np.exp(-excess / np.maximum(sigma, 1e-12))
        w /= w.sum(axis=1, keepdims=True)
        out[i : i + len(nbr)] = np.einsum("qk,qkc->qc", w, fit_xy[nbr])
    return out


def fit_map(
    x: np.ndarray, method: str, n_neighbors: int, min_dist: float, seed: int, say: Callable[[str], None]
) -> np.ndarray:
    """float32 [len(x), 2]: UMAP or PaCMAP of the rows."""
    n = len(x)
    nn = max(2, min(n_neighbors, n - 1))
    if method == "pacmap":
        import pacmap

        say(f"PaCMAP of {n} points")
        reducer = pacmap.PaCMAP(n_components=2, n_neighbors=nn, random_state=seed, verbose=False)
        xy = reducer.fit_transform(x, init="pca")
    else:
        with warnings.catch_warnings():  # umap warns that TensorFlow (ParametricUMAP) is absent
            warnings.simplefilter("ignore", ImportWarning)
            import umap

        say(f"UMAP of {n} points")
        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=nn,
            min_dist=min_dist,
            metric="euclidean",
            random_state=seed,
            low_memory=True,
            init="spectral" if n > nn + 2 else "random",
            n_jobs=1,
        )
        xy = reducer.fit_transform(x)
    return np.asarray(xy, dtype=np.float32)
