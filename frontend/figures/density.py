"""Density and sampling maths of the plane: pure numpy, no Plotly, no Dash.

Ranges, equal-width bins and 2D histograms (the same bins as numpy's), the density-aware sample that keeps
the plane fluid at 1M points, highest-density levels for contours, the top-p% corner of the paper's
presets, quantile edges for the grid, and a selection's task-type shares against the dataset's.
Everything here is for display: counts and memberships come from the server over every point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]


def finite_range(v: npt.ArrayLike, pad: float = 0.02) -> tuple[float, float]:
    """(lo, hi) of the finite values, widened by `pad` of the span; (0, 1) when there are none."""
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 0.0, 1.0
    lo, hi = float(a.min()), float(a.max())
    span = hi - lo
    if span <= 0:
        span = abs(lo) * 0.1 or 1.0
        return lo - span, hi + span
    return lo - pad * span, hi + pad * span


def quantile_edges(v: npt.ArrayLike, n: int) -> list[float]:
    """The n+1 edges of an n-quantile partition of the finite values (linear, as the server does)."""
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return [0.0] * (n + 1)
    return [float(e) for e in np.quantile(a, np.linspace(0.0, 1.0, n + 1))]


def bin_index(v: npt.ArrayLike, lo: float, hi: float, bins: int) -> npt.NDArray[np.int64]:
    """Bin of each value on `bins` equal bins over [lo, hi] (hi falls in the last bin); -1 outside or NaN."""
    a = np.asarray(v, dtype=np.float64)
    span = hi - lo if hi > lo else 1.0
    with np.errstate(invalid="ignore"):
        idx = np.floor((a - lo) * (bins / span))
        inside = np.isfinite(a) & (a >= lo) & (a <= hi)
    out = np.where(inside, np.minimum(idx, bins - 1), -1)
    return out.astype(np.int64)


def histogram2d(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    bins: int,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
) -> tuple[npt.NDArray[np.int64], FloatArray, FloatArray]:
    """Counts as (ny, nx) (rows = y, the way plotly's heatmap wants them) and the bin edges.

    The same bins as numpy.histogram2d (the last one closed on the right), in one bincount pass.
    """
    ix = bin_index(x, *x_range, bins)
    iy = bin_index(y, *y_range, bins)
    ok = (ix >= 0) & (iy >= 0)
    counts = np.bincount(iy[ok] * bins + ix[ok], minlength=bins * bins).reshape(bins, bins)
    xe = np.linspace(x_range[0], x_range[1], bins + 1)
    ye = np.linspace(y_range[0], y_range[1], bins + 1)
    return counts.astype(np.int64), xe, ye


def water_level(counts: npt.NDArray[np.int64], budget: int) -> float:
    """The cap c with sum(min(counts, c)) == budget (for counts that sum above budget)."""
    cs = np.sort(counts[counts > 0]).astype(np.float64)
    m = cs.size
    prefix = np.concatenate([[0.0], np.cumsum(cs)])
    k = np.arange(m)
    total_at = prefix[:-1] + cs * (m - k)  # sum(min(counts, cs[k]))
    first = int(np.searchsorted(total_at, budget, side="right"))
    if first >= m:
        return float(cs[-1])
    return float((budget - prefix[first]) / (m - first))


def density_sample(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    budget: int,
    bins: int = 128,
    seed: int = 0,
) -> npt.NDArray[np.int64]:
    """Indices of at most `budget` points, thinned where the plane is dense and kept where it is sparse.

    On a `bins` x `bins` grid, a cell with `k` points keeps each with probability min(1, c / k), where
    the water level `c` makes the expected total equal `budget`: sparse cells (k <= c) keep every point,
    so outliers always show; dense cores are thinned. Deterministic for a seed, O(n), returned sorted.
    Points with a non-finite coordinate are never drawn.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(xa) & np.isfinite(ya))
    if ok.size <= budget:
        return ok.astype(np.int64)
    if budget <= 0:
        return np.empty(0, dtype=np.int64)
    xr = finite_range(xa[ok], 0.0)
    yr = finite_range(ya[ok], 0.0)
    cell = bin_index(xa[ok], *xr, bins) * bins + bin_index(ya[ok], *yr, bins)
    counts = np.bincount(cell, minlength=bins * bins)
    level = water_level(counts, budget)
    rng = np.random.default_rng(seed)
    keep = rng.random(ok.size) * counts[cell] < level
    chosen = ok[keep]
    if chosen.size > budget:  # the draw overshot its expectation: drop a random few
        chosen = np.sort(rng.choice(chosen, size=budget, replace=False))
    return chosen.astype(np.int64)


def hdr_levels(counts: npt.ArrayLike, fractions: Sequence[float] = (0.5, 0.9)) -> list[float]:
    """Density thresholds whose super-level sets hold each fraction of the mass (highest-density regions).

    Returned in the order of `fractions`; a larger fraction gives a lower (or equal) threshold.
    """
    c = np.sort(np.asarray(counts, dtype=np.float64).ravel())[::-1]
    total = c.sum()
    if total <= 0:
        return [0.0 for _ in fractions]
    cum = np.cumsum(c) / total
    out = []
    for f in fractions:
        k = int(np.searchsorted(cum, min(max(f, 0.0), 1.0), side="left"))
        out.append(float(c[min(k, c.size - 1)]))
    return out


def smooth(z: FloatArray) -> FloatArray:
    """A 3x3 binomial blur (edges padded), enough to make contours of a coarse histogram readable."""
    k = np.array([1.0, 2.0, 1.0]) / 4.0
    p = np.pad(z, 1, mode="edge")
    rows = k[0] * p[:-2, :] + k[1] * p[1:-1, :] + k[2] * p[2:, :]
    return np.asarray(k[0] * rows[:, :-2] + k[1] * rows[:, 1:-1] + k[2] * rows[:, 2:], dtype=np.float64)


def top_corner(x: npt.ArrayLike, y: npt.ArrayLike, percent: float, axes: str) -> tuple[float | None, float | None]:
    """Where the paper's top-p% region starts, for drawing: (x threshold, y threshold); None = free axis.

    `axes` "x" (DIL), "y" (DIS) or "both" (DIQ: by the smaller of the two ranks, so the region is the
    quadrant above both thresholds). Display only; the server decides membership.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    m = xa.size
    if m == 0:
        return None, None
    k = max(1, min(m, math.floor(percent / 100.0 * m + 0.5)))
    if axes == "x":
        return float(np.partition(xa, m - k)[m - k]), None
    if axes == "y":
        return None, float(np.partition(ya, m - k)[m - k])
    xs = np.sort(xa)
    ys = np.sort(ya)
    rx = np.searchsorted(xs, xa, side="left")
    ry = np.searchsorted(ys, ya, side="left")
    score = np.minimum(rx, ry)
    s = int(np.partition(score, m - k)[m - k])
    return float(xs[s]), float(ys[s])


def shares(by_task_type: Mapping[str, int], dataset_task_types: Mapping[str, int]) -> list[dict[str, Any]]:
    """Rows {task_type, count, share, base_share, lift} for the selection panel, largest first.

    `share` is the type's part of the selection, `base_share` its part of the dataset, `lift` their ratio.
    """
    total = sum(by_task_type.values())
    base_total = sum(dataset_task_types.values())
    names = list(dict.fromkeys([*by_task_type, *dataset_task_types]))
    rows: list[dict[str, Any]] = []
    for name in names:
        n = int(by_task_type.get(name, 0))
        share = n / total if total else 0.0
        base = dataset_task_types.get(name, 0) / base_total if base_total else 0.0
        rows.append(
            {"task_type": name, "count": n, "share": share, "base_share": base, "lift": share / base if base else None}
        )
    rows.sort(key=lambda r: (-int(r["count"]), str(r["task_type"])))
    return rows
