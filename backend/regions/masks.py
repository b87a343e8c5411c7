"""Which points a region holds: boxes, quantile bands, grid cells, top-k and polygons.

The rules (boundaries, non-finite points, ties) are in :mod:`backend.regions`.
"""

from __future__ import annotations

import math
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
    finite = np.isfinite(v)
    if not finite.all():  # a plane's values usually are: no 10M-value copy then
        v = v[finite]
    q = np.asarray(qs, dtype=np.float64)
    if v.size == 0:
        return np.full(q.shape, np.nan)
    return np.asarray(np.quantile(v, q), dtype=np.float64)


def _band(v: np.ndarray, pop: BoolArray, qlo: float, qhi: float) -> BoolArray:
    lo, hi = quantile_edges(v if pop.all() else v[pop], [qlo, qhi])  # the usual plane: no 10M-value copy
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


ESTIMATE_POINTS = 100_000  # points whose DIQ scores estimate where the top-k threshold lies


def _diq_top(x: np.ndarray, y: np.ndarray, k: int) -> IntArray:
    """Positions of the ``k`` points with the largest min(rank on x, rank on y), ties at the threshold to the
    lowest positions, sorted (``x`` and ``y``: the population's values; ranks count the values strictly below).

    Without ranking every point: a point's x rank is >= t exactly when its x exceeds the (t-1)-th smallest x,
    so the points scoring >= t are ``G(t) = {x > sx[t-1] and y > sy[t-1]}`` (sx, sy: the sorted values). A
    sample says between which ranks the k-th score lies (``c_lo`` a little below it, ``c_hi`` a little above);
    only each axis's values between those ranks are sorted (a window of ~4% of the points), and the threshold is
    the largest t with |G(t)| >= k, found by bisection between ``lo`` and ``hi`` (the ranks both windows cover).
    At 10M points and 10% that sorts ~0.4M values per axis and partitions nothing; a misjudged sample widens the
    window (down to rank 0, up to the top) and goes again."""
    m = x.shape[0]
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= m:
        return np.arange(m, dtype=np.int64)
    c_lo, c_hi = _diq_bounds(x, y, k)
    while True:
        with ThreadPoolExecutor(2) as pool:  # NumPy compares, compresses and sorts without the GIL
            wx, wy = pool.map(_window, (x, y), (c_lo, c_lo), (c_hi, c_hi))
        cand = np.flatnonzero((x > wx.cut) & (y > wy.cut)) if c_lo else np.arange(m, dtype=np.int64)
        corner = _Corner(cand, x, y, wx, wy)
        lo = max(wx.below, wy.below)  # every point scoring >= lo is a candidate (all of them when both agree)
        hi = min(wx.top, wy.top)  # the windows hold every rank in [lo, hi)
        if hi < m and hi <= lo:
            c_hi = m  # the two windows share no rank: widen up to the top
        elif c_lo and np.count_nonzero(corner.members(lo)) < k:
            c_lo //= 2  # the sample placed the threshold too high (a few in a million): widen down
        elif hi < m and np.count_nonzero(corner.members(hi)) >= k:
            c_hi = m  # ... or too low: widen up to the top
        else:
            break

    while hi - lo > 1:  # |G(lo)| >= k > |G(hi)| (no point has rank m)
        mid = (lo + hi) // 2
        if np.count_nonzero(corner.members(mid)) >= k:
            lo = mid
        else:
            hi = mid
    above, at_least = corner.members(lo + 1), corner.members(lo)
    ties = np.flatnonzero(at_least & ~above)[: k - int(np.count_nonzero(above))]
    above[ties] = True
    return corner.cand[above]  # cand is ascending, so this is sorted


class _Window:
    """One axis's values whose ranks lie in [below, top), sorted; ``cut``: the largest value below them (-inf
    when there is none), so that ``value > (the j-th smallest)`` can be asked for every j in [below - 1, top)."""

    def __init__(self, cut: float, below: int, values: FloatArray) -> None:
        self.cut, self.below, self.values = cut, below, values
        self.top = below + values.size

    def at(self, j: int) -> float:
        """The j-th smallest value (from 0), as far as comparing a value of the axis with it goes: for j just
        below the window that is the cut, and ``value > it`` exactly when ``value > cut``."""
        if j < self.below:
            return self.cut
        if j >= self.top:
            raise IndexError(f"rank {j} lies above the window [{self.below}, {self.top})")
        return float(self.values[j - self.below])


class _Corner:
    """The candidates of a DIQ top-k (positions ``cand``, ascending) and which of them score >= t."""

    def __init__(self, cand: IntArray, x: np.ndarray, y: np.ndarray, wx: _Window, wy: _Window) -> None:
        self.cand, self.xc, self.yc = cand, x[cand], y[cand]
        self.wx, self.wy = wx, wy

    def members(self, t: int) -> BoolArray:
        """Which candidates score >= t (lo <= t <= hi of the windows)."""
        if t == 0:
            return np.ones(self.cand.size, dtype=bool)
        return (self.xc > self.wx.at(t - 1)) & (self.yc > self.wy.at(t - 1))


def _estimate_step(m: int) -> int:
    return max(1, m // ESTIMATE_POINTS)


DIQ_MARGIN = 0.02  # of all points, each side of the sampled threshold: far wider than the sample's error (~0.1%)


def _diq_bounds(x: np.ndarray, y: np.ndarray, k: int) -> tuple[int, int]:
    """Ranks ``(c_lo, c_hi)`` between which the k-th largest DIQ score very likely lies: the k-th score of an
    evenly strided sample, as a fraction of its size, less and plus a margin. (0, m) when the sample would be
    everything."""
    m = x.shape[0]
    step = _estimate_step(m)
    if step == 1:
        return 0, m
    xs, ys = x[::step], y[::step]
    score = np.minimum(_min_ranks(xs), _min_ranks(ys))
    kth = np.partition(score, score.size - max(1, k // step))[score.size - max(1, k // step)]
    share = kth / score.size
    return max(0, int((share - DIQ_MARGIN) * m)), min(m, math.ceil((share + DIQ_MARGIN) * m))


def _window(v: np.ndarray, c_lo: int, c_hi: int) -> _Window:
    """The sorted values of `v` from a little below rank c_lo to a little above rank c_hi (sampled cuts, whole
    tie groups): one pass of comparisons, no partition of all of ``v``.

    Values that float32 holds exactly (a plane's columns are float32) are sorted as float32: same order,
    ~1.7x faster."""
    m = v.shape[0]
    lo_cut, hi_cut = -math.inf, math.inf
    if c_lo > 0 or c_hi < m:
        sample = np.sort(v[:: _estimate_step(m)])
        if c_lo > 0:
            at = sample[min(sample.size - 1, c_lo * sample.size // m)]
            first = int(np.searchsorted(sample, at, side="left"))  # below the tie group that holds rank c_lo
            lo_cut = float(sample[first - 1]) if first else -math.inf
        if c_hi < m:
            i = -(-c_hi * sample.size // m)  # at or above rank c_hi
            hi_cut = float(sample[i]) if i < sample.size else math.inf
    above = v > lo_cut if lo_cut > -math.inf else None
    below = m - (int(np.count_nonzero(above)) if above is not None else m)
    if hi_cut < math.inf:
        keep = v <= hi_cut
        if above is not None:
            keep &= above
        values = v[keep]
    else:
        values = v[above] if above is not None else v
    narrow = values.astype(np.float32)
    if np.array_equal(narrow, values):
        return _Window(lo_cut, below, np.sort(narrow).astype(np.float64))
    return _Window(lo_cut, below, np.sort(values))


def _round_half_up(v: float) -> int:
    return math.floor(v + 0.5)


def _top(x: np.ndarray, y: np.ndarray, percent: float, axes: str) -> BoolArray:
    pop = population(x, y)
    m = int(np.count_nonzero(pop))
    k = _round_half_up(percent * m / 100.0)
    # Every point is in the population (the usual plane): no positions of it, no copies of x or y. At 10M points
    # np.flatnonzero(pop) alone (an 80 MB array of positions) was a third of a DIQ request.
    idx = None if m == x.shape[0] else np.flatnonzero(pop)
    xs, ys = (x, y) if idx is None else (x[idx], y[idx])
    top = _diq_top(xs, ys, k) if axes == "both" else _top_k_stable(xs if axes == "x" else ys, k)
    out = np.zeros(x.shape, dtype=bool)
    out[top if idx is None else idx[top]] = True
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
            with ThreadPoolExecutor(2) as pool:  # NumPy's partitions run without the GIL: one axis each
                on_x = pool.submit(_band, xa, pop, i / r.n, (i + 1) / r.n)
                on_y = pool.submit(_band, ya, pop, j / r.n, (j + 1) / r.n)
                return on_x.result() & on_y.result()
        case TopRegion():
            return _top(xa, ya, r.percent, r.axes)
    raise TypeError(f"not a region: {region!r}")
