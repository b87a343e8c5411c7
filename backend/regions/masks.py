"""Which points a region holds: boxes, quantile bands, grid cells, top-k and polygons.

The rules (boundaries, non-finite points, ties) are in :mod:`backend.regions`.
"""

from __future__ import annotations

import math
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from backend.regions.arrays import BoolArray, FloatArray, IntArray, closed_mask, population, xy
from backend.regions.models import (
    SET_REGIONS,
    AllRegion,
    BoxRegion,
    GridRegion,
    PolygonRegion,
    QuantilesRegion,
    Region,
    TopRegion,
    parse_region,
)
from backend.regions.polygon import points_in_polygon


def quantile_edges(values: npt.ArrayLike, qs: npt.ArrayLike) -> FloatArray:
    """``numpy.quantile`` (linear) of the finite ``values`` at ``qs``, in float64; empty input -> NaN."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    q = np.asarray(qs, dtype=np.float64)
    if v.size == 0:
        return np.full(q.shape, np.nan)
    return np.asarray(np.quantile(v, q), dtype=np.float64)


def _band(v: np.ndarray, pop: BoolArray, qlo: float, qhi: float) -> BoolArray:
    lo, hi = quantile_edges(v[pop], [qlo, qhi])
    if np.isnan(lo):
        return np.zeros(v.shape, dtype=bool)
    upper = v <= hi if qhi >= 1.0 else v < hi
    return pop & (v >= lo) & upper


def _cell_index(v: np.ndarray, pop: BoolArray, n: int) -> IntArray:
    edges = quantile_edges(v[pop], np.arange(n + 1) / n)
    if np.isnan(edges[0]):
        return np.full(v.shape, -1, dtype=np.int64)
    # side="right": v in [e_i, e_{i+1}) -> i; the maximum lands on n and is clipped into the last cell.
    idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, n - 1).astype(np.int64)
    idx[~pop] = -1
    return idx


def grid_cells(x: npt.ArrayLike, y: npt.ArrayLike, n: int = 3) -> tuple[IntArray, IntArray]:
    """Cell ``(i, j)`` of every point in the ``n x n`` quantile grid; -1 for points outside the population."""
    xa, ya = (a.astype(np.float64, copy=False) for a in xy(x, y))
    pop = population(xa, ya)
    return _cell_index(xa, pop, n), _cell_index(ya, pop, n)


def _min_ranks(v: np.ndarray) -> IntArray:
    """Number of values strictly below each value, so tied values share a rank."""
    m = v.shape[0]
    ranks = np.empty(m, dtype=np.int64)
    if m == 0:
        return ranks
    order = np.argsort(v)  # stability is not needed: ties get the rank of their group's first slot
    sv = v[order]
    first = np.empty(m, dtype=bool)
    first[0] = True
    np.not_equal(sv[1:], sv[:-1], out=first[1:])
    ranks[order] = np.maximum.accumulate(np.where(first, np.arange(m), 0))
    return ranks


def _top_k_stable(score: np.ndarray, k: int) -> IntArray:
    """Positions of the ``k`` largest scores, ties at the threshold to the lowest positions, sorted."""
    m = score.shape[0]
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= m:
        return np.arange(m, dtype=np.int64)
    t = np.partition(score, m - k)[m - k]  # the k-th largest; O(m) rather than a full sort
    above = np.flatnonzero(score > t)
    at = np.flatnonzero(score == t)[: k - above.size]
    return np.sort(np.concatenate([above, at]))


class _ScoreCache:
    """DIQ scores of the last few planes, by the identity of their (cached, never mutated) coordinate arrays: an
    analyst trying 5%, 10%, 20% of one plane pays the two 10M-point sorts once. Weak references: a plane the
    space store lets go is not kept alive here, and a reused ``id`` is never taken for it."""

    SIZE = 2

    def __init__(self) -> None:
        self.entries: list[tuple[weakref.ref[np.ndarray], weakref.ref[np.ndarray], IntArray]] = []
        self.lock = threading.Lock()

    def get(self, x: np.ndarray, y: np.ndarray) -> IntArray | None:
        with self.lock:
            for rx, ry, score in self.entries:
                if rx() is x and ry() is y:
                    return score
        return None

    def put(self, x: np.ndarray, y: np.ndarray, score: IntArray) -> None:
        try:
            refs = (weakref.ref(x), weakref.ref(y))
        except TypeError:  # a view of a buffer that takes no weak references: not cached
            return
        with self.lock:
            self.entries = [*self.entries, (*refs, score)][-self.SIZE :]


_SCORES = _ScoreCache()


def _diq_score(x: np.ndarray, y: np.ndarray, idx: IntArray) -> IntArray:
    """min(rank on x, rank on y) of the points ``idx`` (the plane's population)."""
    cached = _SCORES.get(x, y)
    if cached is not None and cached.shape[0] == idx.size:
        return cached
    # Quantile rank = (values strictly below) / m on each axis; the common denominator drops out. The two
    # sorts run side by side (NumPy sorts without the GIL): at 10M points they are most of the cost.
    with ThreadPoolExecutor(2) as pool:
        rx, ry = pool.map(_min_ranks, (x[idx], y[idx]))
    score = np.minimum(rx, ry)
    _SCORES.put(x, y, score)
    return score


def _round_half_up(v: float) -> int:
    return math.floor(v + 0.5)


def _top(x: np.ndarray, y: np.ndarray, percent: float, axes: str) -> BoolArray:
    pop = population(x, y)
    idx = np.flatnonzero(pop)
    m = idx.size
    k = _round_half_up(percent * m / 100.0)
    score: np.ndarray
    if axes == "x":
        score = x[idx]
    elif axes == "y":
        score = y[idx]
    else:
        score = _diq_score(x, y, idx)
    out = np.zeros(x.shape, dtype=bool)
    out[idx[_top_k_stable(score, k)]] = True
    return out


def region_mask(region: Region | dict[str, Any], x: npt.ArrayLike, y: npt.ArrayLike) -> BoolArray:
    """Which points ``(x[i], y[i])`` the region holds (rules in :mod:`backend.regions`)."""
    r = region if isinstance(region, BaseModel) else parse_region(region)
    xa, ya = xy(x, y)
    if isinstance(r, AllRegion):
        return np.ones(xa.shape, dtype=bool)
    if isinstance(r, SET_REGIONS):
        raise TypeError(f"a {r.type!r} region is decided from saved selections, not coordinates")
    if isinstance(r, PolygonRegion):
        return points_in_polygon(xa, ya, r.array())
    # float64 throughout: NumPy 2 would otherwise round Python-float bounds to float32 before comparing.
    xa = xa.astype(np.float64, copy=False)
    ya = ya.astype(np.float64, copy=False)
    match r:
        case BoxRegion():
            return closed_mask(xa, *r.x) & closed_mask(ya, *r.y) & population(xa, ya)
        case QuantilesRegion():
            pop = population(xa, ya)
            m = pop.copy()
            if r.x is not None:
                m &= _band(xa, pop, *r.x)
            if r.y is not None:
                m &= _band(ya, pop, *r.y)
            return m
        case GridRegion():
            # Cell (i, j) is the band [i/n, (i+1)/n] on x times [j/n, (j+1)/n] on y: the same edges
            # as grid_cells, at two quantiles per axis instead of n+1.
            pop = population(xa, ya)
            i, j = r.cell
            return _band(xa, pop, i / r.n, (i + 1) / r.n) & _band(ya, pop, j / r.n, (j + 1) / r.n)
        case TopRegion():
            return _top(xa, ya, r.percent, r.axes)
    raise TypeError(f"not a region: {region!r}")
