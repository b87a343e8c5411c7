"""A view of the plane (axis ranges) and a density-aware sample of its points, so a browser never gets 10M.

The sample keeps every point of the view's sparse grid cells and thins the dense ones to a common cap (the
cap is the largest that keeps at most `max_points` in all), so outliers and small clusters stay visible while
the bulk is drawn at a density the density image fills in. Which points a dense cell keeps is decided by a
hash of each sample id and the seed: the same request gives the same points, and a point kept in a view tends
to stay kept when the view zooms in (its key does not change, only the cap does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from backend.space.columns import FloatArray, IdArray, Space

SAMPLE_GRID = 128  # cells per axis of the grid the sample is density-aware on
BoolArray = npt.NDArray[np.bool_]
Range = tuple[float, float]


class RangeError(ValueError):
    """A range parameter that is not `lo,hi` with finite lo < hi; the API answers 422."""


def parse_range(name: str, text: str | None) -> Range | None:
    """`lo,hi` to (lo, hi); None when absent."""
    if text is None or not text.strip():
        return None
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        lo, hi = math.nan, math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise RangeError(f"{name} must be 'lo,hi' with finite numbers and lo < hi, got {text!r}")
    return lo, hi


@dataclass(frozen=True)
class View:
    """The points of a plane in view (`mask` over the plane's points; None: all) and the sample sent of them."""

    total: int  # points in view
    mask: BoolArray | None  # the points sent (None: every point of the plane)

    @property
    def sent(self) -> int:
        return self.total if self.mask is None else int(self.mask.sum())

    @property
    def sampled(self) -> bool:
        return self.sent < self.total


def in_view(space: Space, mask: BoolArray | None, x_range: Range | None, y_range: Range | None) -> BoolArray | None:
    """The plane's points inside the ranges (bounds included) and `mask`; None when nothing restricts them."""
    out = mask
    for values, rng in ((space.x, x_range), (space.y, y_range)):
        if rng is not None:
            inside = (values >= rng[0]) & (values <= rng[1])
            out = inside if out is None else out & inside
    return out


def view(
    space: Space,
    mask: BoolArray | None,
    x_range: Range | None = None,
    y_range: Range | None = None,
    max_points: int | None = None,
    seed: int = 0,
) -> View:
    """The points in view, thinned density-aware to at most `max_points` (see the module's doc)."""
    shown = in_view(space, mask, x_range, y_range)
    total = len(space.ids) if shown is None else int(shown.sum())
    if max_points is None or total <= max_points:
        return View(total, shown)
    idx = np.arange(len(space.ids)) if shown is None else np.flatnonzero(shown)
    keep = idx[sample(space.ids[idx], space.x[idx], space.y[idx], max_points, seed, x_range, y_range)]
    out = np.zeros(len(space.ids), dtype=bool)
    out[keep] = True
    return View(total, out)


def sample(
    ids: IdArray,
    x: FloatArray,
    y: FloatArray,
    max_points: int,
    seed: int = 0,
    x_range: Range | None = None,
    y_range: Range | None = None,
) -> npt.NDArray[np.intp]:
    """Positions of at most `max_points` points: every point of the grid cells holding at most the cap, and
    about `cap` of each denser one."""
    n = len(ids)
    if n <= max_points:
        return np.arange(n)
    cell = _cells(x, x_range)
    cell *= SAMPLE_GRID
    cell += _cells(y, y_range)
    counts = np.bincount(cell, minlength=SAMPLE_GRID * SAMPLE_GRID)
    cap = _cap(counts[counts > 0], max_points)
    # A point of a cell of count c is kept when its hash in [0, 1) is under min(1, cap / c): all of a sparse
    # cell, `cap` of a dense one in expectation, max_points in all in expectation. For exactly max_points, the
    # points go by margin = hash / chance (sparse cells' first), the few hundred by which chance missed
    # trimmed or topped up.
    chance = np.minimum(1.0, cap / np.maximum(counts, 1)).astype(np.float32)
    margin = _unit_hash(ids, seed)
    margin /= chance[cell]
    margin[counts[cell] <= cap] = 0.0
    limit = 1.0
    picked = np.flatnonzero(margin < limit)
    while len(picked) < max_points:
        limit *= 1.25
        picked = np.flatnonzero(margin < limit)
    if len(picked) > max_points:
        picked = np.sort(picked[np.argpartition(margin[picked], max_points - 1)[:max_points]])
    return picked


def _cells(values: FloatArray, rng: Range | None) -> npt.NDArray[np.int32]:
    lo, hi = rng if rng is not None else (float(values.min()), float(values.max()))
    scaled = values - lo
    scaled *= SAMPLE_GRID / ((hi - lo) or 1.0)
    out = scaled.astype(np.int32)
    return np.clip(out, 0, SAMPLE_GRID - 1, out=out)


def _cap(counts: npt.NDArray[np.int64], budget: int) -> float:
    """The largest cap t with sum(min(count, t)) <= budget (water filling; counts are the non-empty cells')."""
    c = np.sort(counts).astype(np.float64)
    k = len(c)
    below = np.concatenate(([0.0], np.cumsum(c)[:-1]))  # below[i]: points in the i smallest cells
    # With cells i.. capped at t: below[i] + t * (k - i) = budget; the first i where t fits under c[i] is it.
    t = (budget - below) / (k - np.arange(k))
    fits = np.flatnonzero(t <= c)
    return float(t[fits[0]]) if len(fits) else float(c[-1])


def _unit_hash(ids: IdArray, seed: int) -> npt.NDArray[np.float32]:
    """A uniform value in [0, 1) per id and seed (murmur3's 32-bit finaliser): the same in every view."""
    with np.errstate(over="ignore"):
        h = ids.astype(np.uint32)
        h += np.uint32((seed * 0x9E3779B9 + 0x7F4A7C15) & 0xFFFFFFFF)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    h >>= np.uint32(8)  # 24 bits: exact in float32
    out = h.astype(np.float32)
    out *= np.float32(1.0 / (1 << 24))
    return out
