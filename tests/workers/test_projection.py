"""The data map: PCA + UMAP fitted on a sample, the other points placed by their nearest fitted neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from backend.queue.embeddings import Embeddings
from workers.derived import projection
from workers.derived.projection import place, project


def blobs(n_per: int, centres: int, dim: int, seed: int) -> tuple[Embeddings, np.ndarray]:
    """Unit rows around ``centres`` far-apart directions, and each row's blob."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim)) * 4
    label = np.repeat(np.arange(centres), n_per)
    rows = means[label] + rng.normal(size=(len(label), dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    ids = np.arange(1, len(label) + 1, dtype=np.int64)
    m = rows.astype(np.float16)
    return Embeddings(ids, m, m), label


def nearest_centre_accuracy(xy: np.ndarray, label: np.ndarray, scored: np.ndarray, centre_of: np.ndarray) -> float:
    """How often a point's nearest blob centre (centres from ``centre_of`` rows) is its own blob."""
    centres = np.stack([xy[centre_of & (label == b)].mean(axis=0) for b in np.unique(label)])
    nearest = np.argmin(((xy[scored, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    return float((nearest == label[scored]).mean())


def test_placement_is_the_membership_weighted_mean_of_the_neighbours() -> None:
    fit_x = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    fit_xy = np.array([[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]], dtype=np.float32)
    new_x = np.array([[1.0, 0.0]], dtype=np.float32)  # equidistant from the first two
    assert place(fit_x, fit_xy, new_x, 2)[0].tolist() == pytest.approx([2.0, 3.0])
    # A row on top of a fitted row, with a farther second neighbour, sits nearer the first.
    got = place(fit_x, fit_xy, np.array([[0.0, 0.0]], dtype=np.float32), 2)[0]
    assert np.linalg.norm(got - fit_xy[0]) < np.linalg.norm(got - fit_xy[1])


@pytest.mark.parametrize("exact_rows", [20_000, 100], ids=["flat", "ivf"])
def test_points_not_fitted_land_in_their_own_cluster(monkeypatch: pytest.MonkeyPatch, exact_rows: int) -> None:
    monkeypatch.setattr(projection, "EXACT_PLACEMENT_ROWS", exact_rows)
    emb, label = blobs(n_per=400, centres=5, dim=32, seed=0)
    xy = project(emb, "image", "umap", 15, 0.1, 16, seed=0, fit_rows=600)
    assert xy.shape == (len(label), 2) and np.isfinite(xy).all()
    fitted = np.zeros(len(label), dtype=bool)
    fitted[np.random.default_rng(0).choice(len(label), size=600, replace=False)] = True
    assert nearest_centre_accuracy(xy, label, ~fitted, fitted) >= 0.99
    again = project(emb, "image", "umap", 15, 0.1, 16, seed=0, fit_rows=600)
    assert np.array_equal(xy, again)  # a seed gives one map


def test_fit_rows_at_or_above_n_fits_every_point() -> None:
    emb, _ = blobs(n_per=60, centres=3, dim=16, seed=1)
    full = project(emb, "image", "umap", 10, 0.1, 8, seed=0)
    assert np.array_equal(full, project(emb, "image", "umap", 10, 0.1, 8, seed=0, fit_rows=len(emb)))
