"""2D maps of embeddings: PCA to ``pca_dims`` (fitted on a sample, applied block by block), then UMAP or PaCMAP."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from backend.queue.embeddings import Embeddings
from workers.derived.blocks import blocks, subsample

PCA_FIT_ROWS = 50_000


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
) -> np.ndarray:
    """float32 [n, 2] map coordinates."""
    n = len(emb)
    if n < 4:  # too few for a neighbour graph: the first two principal axes
        return pca_reduce(emb, source, 2, seed)[:, :2] if n else np.empty((0, 2), np.float32)
    say(f"PCA to {pca_dims} dimensions")
    x = pca_reduce(emb, source, pca_dims, seed)
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
