"""Regions of the quality plane and the paper's selection recipes, as pure maths.

Every sample is a point (x, y) (e.g. x = loss, y = CLIP score). This module decides which points a
region holds, draws reproducible random subsets and builds the paper's staged curriculum. It knows no
database and no web framework: the API resolves axes to float arrays and calls in here.

Rules shared by every region except ``all``:

- A point with a non-finite coordinate (NaN, +-inf) on either axis is outside. Quantiles, ranks and
  default minima are computed over the points that are finite on both axes (the *population*).
- Polygon boundary (half-open rule): a point on an edge or vertex is inside iff the points just to its
  right (+x, then +y for horizontal edges) are inside. Left and bottom edges are in, right and top edges
  out, like ``[lo, hi)``. Every edge is evaluated in one canonical orientation (from its lower end), so
  for polygons A and B that share an edge (same vertex coordinates) ``in(A) xor in(B) == in(A u B)``
  holds exactly, in floats too: a point on the shared edge goes to exactly one of them.
- Box: closed on both sides, ``lo <= v <= hi``; ``None`` leaves that side open.
- Quantile band ``[qlo, qhi]``: half-open on the value edges, ``e(qlo) <= v < e(qhi)``, except that
  ``qhi == 1`` is closed, where ``e(q) = numpy.quantile(population, q)`` (linear). Bands that meet at a
  cut and the cells of a grid therefore partition the population exactly, whatever the ties.
- ``top``: exactly ``round_half_up(percent/100 * m)`` points of the ``m`` in the population; ties at the
  threshold go to the lower index.
"""

from __future__ import annotations

import heapq
import math
import threading
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from numba import njit, prange
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, TypeAdapter, field_validator, model_validator

__all__ = [
    "MAX_POLYGON_VERTICES",
    "AllRegion",
    "BoxRegion",
    "CurriculumBuilder",
    "GridRegion",
    "PolygonRegion",
    "QuantilesRegion",
    "RangeFilter",
    "Region",
    "Sample",
    "TopRegion",
    "curriculum_stages",
    "grid_cells",
    "parse_region",
    "points_in_polygon",
    "quantile_edges",
    "region_mask",
    "sample_indices",
    "simplify_polygon",
]

MAX_POLYGON_VERTICES = 1000
MAX_GRID_N = 100

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------------
# Pydantic models (the REST contract's shapes)
# --------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    # Unknown keys are a typo in a saved recipe, better rejected than silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolygonRegion(_Strict):
    """A lasso: 3..1000 vertices ``[[x, y], ...]``, implicitly closed; see the module's boundary rule."""

    type: Literal["polygon"] = "polygon"
    points: list[tuple[FiniteFloat, FiniteFloat]]

    @field_validator("points", mode="before")
    @classmethod
    def _count_first(cls, v: Any) -> Any:
        # Checked before element validation so a 10^6-vertex payload is refused in O(1).
        if isinstance(v, list | tuple):
            if len(v) < 3:
                raise ValueError(f"a polygon needs at least 3 vertices, got {len(v)}")
            if len(v) > MAX_POLYGON_VERTICES:
                raise ValueError(
                    f"a polygon may have at most {MAX_POLYGON_VERTICES} vertices, got {len(v)}; "
                    "simplify the lasso first"
                )
        return v

    def array(self) -> FloatArray:
        """The vertices as a float64 ``(k, 2)`` array."""
        return np.asarray(self.points, dtype=np.float64).reshape(-1, 2)


def _check_interval(v: tuple[float | None, float | None] | None, what: str) -> None:
    if v is not None and v[0] is not None and v[1] is not None and v[0] > v[1]:
        raise ValueError(f"{what}: lower bound {v[0]} is above upper bound {v[1]}")


class BoxRegion(_Strict):
    """``lo <= x <= hi and lo <= y <= hi`` (closed); ``null`` leaves a side open, an omitted axis is free."""

    type: Literal["box"] = "box"
    x: tuple[FiniteFloat | None, FiniteFloat | None] = (None, None)
    y: tuple[FiniteFloat | None, FiniteFloat | None] = (None, None)

    @model_validator(mode="after")
    def _ordered(self) -> BoxRegion:
        _check_interval(self.x, "box.x")
        _check_interval(self.y, "box.y")
        return self


_Q = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class QuantilesRegion(_Strict):
    """A quantile band per axis, ``[qlo, qhi]`` with ``0 <= qlo < qhi <= 1``; either axis may be omitted."""

    type: Literal["quantiles"] = "quantiles"
    x: tuple[_Q, _Q] | None = None
    y: tuple[_Q, _Q] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> QuantilesRegion:
        if self.x is None and self.y is None:
            raise ValueError("quantiles: give a band for x, y or both")
        for name, band in (("x", self.x), ("y", self.y)):
            if band is not None and not band[0] < band[1]:
                raise ValueError(f"quantiles.{name}: need qlo < qhi, got {list(band)}")
        return self


class GridRegion(_Strict):
    """Cell ``(i, j)`` of an ``n x n`` quantile grid; ``i`` along x, ``j`` along y, 0 = lowest values."""

    type: Literal["grid"] = "grid"
    n: int = Field(default=3, ge=1, le=MAX_GRID_N)
    cell: tuple[int, int]

    @model_validator(mode="after")
    def _in_grid(self) -> GridRegion:
        i, j = self.cell
        if not (0 <= i < self.n and 0 <= j < self.n):
            raise ValueError(f"grid: cell {list(self.cell)} is outside a {self.n} x {self.n} grid (0-based)")
        return self


class TopRegion(_Strict):
    """The top ``percent`` % by x (DIL), y (DIS) or both (DIQ: by the smaller of the two quantile ranks)."""

    type: Literal["top"] = "top"
    percent: float = Field(gt=0.0, le=100.0, allow_inf_nan=False)
    axes: Literal["x", "y", "both"] = "both"


class AllRegion(_Strict):
    """Every point, non-finite ones included (with ``sample``: the random control)."""

    type: Literal["all"] = "all"


Region = Annotated[
    PolygonRegion | BoxRegion | QuantilesRegion | GridRegion | TopRegion | AllRegion,
    Field(discriminator="type"),
]
_REGION_ADAPTER: TypeAdapter[Region] = TypeAdapter(Region)


def parse_region(obj: Any) -> Region:
    """Validate a region dict (or re-validate a model); raises ``pydantic.ValidationError``, a ValueError."""
    if isinstance(obj, BaseModel):
        return _REGION_ADAPTER.validate_python(obj.model_dump())
    return _REGION_ADAPTER.validate_python(obj)


class Sample(_Strict):
    """Keep ``n`` points drawn uniformly at random with ``seed`` (see :func:`sample_indices`)."""

    n: int = Field(ge=1)
    seed: int = Field(default=0, ge=0)


class RangeFilter(_Strict):
    """``min <= value <= max`` on an axis (``"RUN:METRIC"``, ``"clip"``, ``"loss"``); a bound may be null."""

    axis: str = Field(min_length=1)
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    @model_validator(mode="after")
    def _bounded(self) -> RangeFilter:
        if self.min is None and self.max is None:
            raise ValueError(f"range on {self.axis!r}: give min, max or both")
        _check_interval((self.min, self.max), f"range on {self.axis!r}")
        return self

    def mask(self, values: npt.ArrayLike) -> BoolArray:
        """Which values lie in the closed range; NaN never does."""
        return _closed_mask(np.asarray(values, dtype=np.float64), self.min, self.max)


class CurriculumBuilder(_Strict):
    """The paper's builder, ``{stages, x_min?, y_min?, dx, dy, per_stage, seed}``: see curriculum_stages."""

    stages: int = Field(ge=1, le=100)
    x_min: FiniteFloat | None = None
    y_min: FiniteFloat | None = None
    dx: FiniteFloat
    dy: FiniteFloat
    per_stage: int = Field(ge=1)
    seed: int = Field(default=0, ge=0)
    disjoint: bool = True


# --------------------------------------------------------------------------------------------------
# Point in polygon (numba)
# --------------------------------------------------------------------------------------------------

# Rows of the slab edge table (one column per table entry, so each field is contiguous); edges are
# stored with y0 < y1 (canonical orientation) and with the x-range they cover.
_Y0, _Y1, _X0, _DX, _DY, _XLO, _XHI = range(7)
_NROW = 7
# Fields of the bounds vector passed to the kernel.
_BX0, _BX1, _BY0, _BY1, _BINVH, _BNSLAB, _BG, _BINVWX, _BINVWY = range(9)
# Bound on slab-table entries so a pathological zig-zag polygon cannot take unbounded memory.
_MAX_TABLE_ENTRIES = 4_000_000
_MAX_SLABS = 1 << 16
# Raster side for big inputs, and the input size below which a raster does not pay for itself.
_RASTER_SIDE = 256
_RASTER_MIN_POINTS = 4096
_OUT, _IN, _EDGE = 0, 1, 2  # raster cell states


@njit(cache=True, inline="always")
def _bin(v: float, lo: float, inv: float, n: int) -> int:
    # The same float expression for points and for edge ends: it is monotone in v, so a point with
    # y0 <= py <= y1 always falls in a slab that lists the edge; no widening is needed.
    s = int((v - lo) * inv)
    if s < 0:
        return 0
    return n - 1 if s >= n else s


@njit(cache=True, inline="always")
def _parity(px: float, py: float, bounds: np.ndarray, offsets: np.ndarray, table: np.ndarray) -> bool:
    s = _bin(py, bounds[_BY0], bounds[_BINVH], int(bounds[_BNSLAB]))
    inside = False
    for r in range(offsets[s], offsets[s + 1]):
        y0 = table[_Y0, r]
        # The edge counts if it spans py (half-open) and crosses the line y = py strictly right of p:
        # wholly right of p, or x0 + (py-y0)*dx/dy > px multiplied out by dy > 0. Evaluated from the
        # canonical orientation only, so an edge shared by two polygons gives both the same answer.
        if (
            py >= y0
            and py < table[_Y1, r]
            and (
                px < table[_XLO, r]
                or (px <= table[_XHI, r] and (py - y0) * table[_DX, r] > (px - table[_X0, r]) * table[_DY, r])
            )
        ):
            inside = not inside
    return inside


@njit(cache=True)
def _build_slabs(poly: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = poly.shape[0]
    edges = np.empty((_NROW, k), dtype=np.float64)
    ne = 0
    for a in range(k):
        b = a + 1 if a + 1 < k else 0
        xa, ya, xb, yb = poly[a, 0], poly[a, 1], poly[b, 0], poly[b, 1]
        if ya == yb:
            continue  # horizontal edges never pass the half-open test
        if ya > yb:
            xa, ya, xb, yb = xb, yb, xa, ya
        edges[_Y0, ne] = ya
        edges[_Y1, ne] = yb
        edges[_X0, ne] = xa
        edges[_DX, ne] = xb - xa
        edges[_DY, ne] = yb - ya
        edges[_XLO, ne] = min(xa, xb)
        edges[_XHI, ne] = max(xa, xb)
        ne += 1
    bounds = np.zeros(9)
    bounds[_BX0] = poly[:, 0].min()
    bounds[_BX1] = poly[:, 0].max()
    if ne == 0:
        return bounds, np.zeros(2, np.int64), np.empty((_NROW, 0))
    y_lo = edges[_Y0, :ne].min()
    y_hi = edges[_Y1, :ne].max()
    height = y_hi - y_lo
    span = edges[_DY, :ne].sum()
    # About one edge end per slab, unless edges span so many slabs that the table would explode.
    nslab = max(1, min(ne, _MAX_SLABS, int(_MAX_TABLE_ENTRIES / (span / height + 1.0))))
    inv_h = nslab / height
    counts = np.zeros(nslab + 1, np.int64)
    for e in range(ne):
        for s in range(_bin(edges[_Y0, e], y_lo, inv_h, nslab), _bin(edges[_Y1, e], y_lo, inv_h, nslab) + 1):
            counts[s + 1] += 1
    offsets = np.cumsum(counts)
    table = np.empty((_NROW, offsets[nslab]), dtype=np.float64)
    fill = offsets[:nslab].copy()
    for e in range(ne):
        for s in range(_bin(edges[_Y0, e], y_lo, inv_h, nslab), _bin(edges[_Y1, e], y_lo, inv_h, nslab) + 1):
            table[:, fill[s]] = edges[:, e]
            fill[s] += 1
    bounds[_BY0] = y_lo
    bounds[_BY1] = y_hi
    bounds[_BINVH] = inv_h
    bounds[_BNSLAB] = nslab
    return bounds, offsets, table


@njit(cache=True)
def _build_raster(poly: np.ndarray, bounds: np.ndarray, offsets: np.ndarray, table: np.ndarray, g: int) -> np.ndarray:
    """A g x g raster over the bounding box: cells far from every edge are resolved once, at their centre.

    A cell is marked _EDGE when any edge (horizontal ones included) comes within about one cell of it.
    Every other cell lies wholly on one side of the boundary, at least a cell away from it, where the
    float test is exact geometry; so its centre's answer is every point's answer in it.
    """
    x_lo, x_hi, y_lo, y_hi = bounds[_BX0], bounds[_BX1], bounds[_BY0], bounds[_BY1]
    wx = (x_hi - x_lo) / g
    wy = (y_hi - y_lo) / g
    inv_wx = g / (x_hi - x_lo)
    inv_wy = g / (y_hi - y_lo)
    raster = np.zeros(g * g, dtype=np.int8)
    k = poly.shape[0]
    for a in range(k):
        b = a + 1 if a + 1 < k else 0
        xa, ya, xb, yb = poly[a, 0], poly[a, 1], poly[b, 0], poly[b, 1]
        if ya > yb:
            xa, ya, xb, yb = xb, yb, xa, ya
        r0 = max(_bin(ya, y_lo, inv_wy, g) - 1, 0)
        r1 = min(_bin(yb, y_lo, inv_wy, g) + 1, g - 1)
        for r in range(r0, r1 + 1):
            # The part of the edge within rows r-1..r+1, then one more cell each side in x.
            lo_y = max(ya, y_lo + (r - 1) * wy)
            hi_y = min(yb, y_lo + (r + 2) * wy)
            if lo_y > hi_y:
                continue
            if yb > ya:
                x1 = xa + (lo_y - ya) * ((xb - xa) / (yb - ya))
                x2 = xa + (hi_y - ya) * ((xb - xa) / (yb - ya))
            else:
                x1, x2 = xa, xb
            c0 = max(_bin(min(x1, x2), x_lo, inv_wx, g) - 1, 0)
            c1 = min(_bin(max(x1, x2), x_lo, inv_wx, g) + 1, g - 1)
            raster[r * g + c0 : r * g + c1 + 1] = _EDGE
    for r in range(g):
        cy = y_lo + (r + 0.5) * wy
        run_state = -1  # edge-free neighbours in a row are on the same side: test a run once
        for c in range(g):
            i = r * g + c
            if raster[i] == _EDGE:
                run_state = -1
                continue
            if run_state < 0:
                run_state = _IN if _parity(x_lo + (c + 0.5) * wx, cy, bounds, offsets, table) else _OUT
            raster[i] = run_state
    return raster


@njit(parallel=True, cache=True)
def _pip_kernel(
    x: np.ndarray,
    y: np.ndarray,
    bounds: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    raster: np.ndarray,
    out: np.ndarray,
) -> None:
    x_lo, x_hi, y_lo, y_hi = bounds[_BX0], bounds[_BX1], bounds[_BY0], bounds[_BY1]
    g = int(bounds[_BG])
    inv_wx, inv_wy = bounds[_BINVWX], bounds[_BINVWY]
    for i in prange(x.shape[0]):
        px = np.float64(x[i])
        py = np.float64(y[i])
        inside = False
        # Written as positive comparisons so NaN fails them. The prefilter is exact, not a heuristic:
        # no edge passes y0 <= py < y1 outside [y_lo, y_hi); left of x_lo every edge that spans py
        # counts (an even number), right of x_hi none does.
        if py >= y_lo and py < y_hi and px >= x_lo and px <= x_hi:
            state = _EDGE
            if g > 0:
                state = raster[_bin(py, y_lo, inv_wy, g) * g + _bin(px, x_lo, inv_wx, g)]
            inside = _parity(px, py, bounds, offsets, table) if state == _EDGE else state == _IN
        out[i] = inside


# The workqueue threading layer (numba's fallback without OpenMP/TBB) aborts on concurrent calls, and
# the API serves requests from a thread pool; calls take milliseconds, so serialising them is cheap.
_KERNEL_LOCK = threading.Lock()


def _as_coords(a: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != np.float32 and arr.dtype != np.float64:
        arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _as_polygon(poly: npt.ArrayLike) -> FloatArray:
    p = np.ascontiguousarray(np.asarray(poly, dtype=np.float64))
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"polygon must have shape (k, 2), got {p.shape}")
    if p.shape[0] < 3:
        raise ValueError(f"a polygon needs at least 3 vertices, got {p.shape[0]}")
    if not np.isfinite(p).all():
        raise ValueError("polygon vertices must be finite numbers")
    return p


def points_in_polygon(x: npt.ArrayLike, y: npt.ArrayLike, poly: npt.ArrayLike) -> BoolArray:
    """Even-odd membership of the points ``(x[i], y[i])`` in ``poly`` (``(k, 2)``, implicitly closed).

    Boundary points follow the half-open rule of the module docstring; NaN coordinates are outside.
    Self-intersecting polygons are allowed (even-odd). ``x``/``y`` float32 or float64, same length.
    """
    xa = _as_coords(x, "x")
    ya = _as_coords(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.shape[0]} vs {ya.shape[0]}")
    side = _RASTER_SIDE if xa.shape[0] >= _RASTER_MIN_POINTS else 0
    return _points_in_polygon(xa, ya, _as_polygon(poly), side)


def _points_in_polygon(xa: np.ndarray, ya: np.ndarray, p: FloatArray, raster_side: int) -> BoolArray:
    out = np.zeros(xa.shape[0], dtype=np.bool_)
    bounds, offsets, table = _build_slabs(p)
    if table.shape[1] == 0 or xa.shape[0] == 0:
        return out  # all edges horizontal: zero area, nothing inside
    x_lo, x_hi, y_lo, y_hi = bounds[_BX0], bounds[_BX1], bounds[_BY0], bounds[_BY1]
    # The raster's exactness argument needs cells far wider than float rounding at these magnitudes.
    scale = 1e-9 * max(abs(x_lo), abs(x_hi), abs(y_lo), abs(y_hi))
    if raster_side > 0 and min(x_hi - x_lo, y_hi - y_lo) / raster_side > scale:
        raster = _build_raster(p, bounds, offsets, table, raster_side)
        bounds[_BG] = raster_side
        bounds[_BINVWX] = raster_side / (x_hi - x_lo)
        bounds[_BINVWY] = raster_side / (y_hi - y_lo)
    else:
        raster = np.zeros(0, dtype=np.int8)
    with _KERNEL_LOCK:
        _pip_kernel(xa, ya, bounds, offsets, table, raster, out)
    return out


# --------------------------------------------------------------------------------------------------
# Lasso simplification
# --------------------------------------------------------------------------------------------------


def simplify_polygon(points: npt.ArrayLike, max_vertices: int = 64) -> FloatArray:
    """Visvalingam-Whyatt: drop the vertex spanning the smallest triangle until <= ``max_vertices`` remain.

    Consecutive duplicates and a repeated closing vertex are removed first; kept vertices are a subset
    of the input, in order. May introduce self-intersections on wild lassos (even-odd still applies).
    """
    if max_vertices < 3:
        raise ValueError(f"max_vertices must be at least 3, got {max_vertices}")
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"polygon must have shape (k, 2), got {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("polygon vertices must be finite numbers")
    if len(p) > 1:
        keep = np.ones(len(p), dtype=bool)
        keep[1:] = (p[1:] != p[:-1]).any(axis=1)
        p = p[keep]
        if len(p) > 1 and (p[0] == p[-1]).all():
            p = p[:-1]
    k = len(p)
    if k < 3:
        raise ValueError(f"a polygon needs at least 3 distinct vertices, got {k}")
    if k <= max_vertices:
        return p.copy()

    prev = [(i - 1) % k for i in range(k)]
    nxt = [(i + 1) % k for i in range(k)]
    alive = [True] * k

    def area(i: int) -> float:
        a, b, c = p[prev[i]], p[i], p[nxt[i]]
        return 0.5 * abs((b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1]))

    version = [0] * k
    heap = [(area(i), i, 0) for i in range(k)]
    heapq.heapify(heap)
    remaining = k
    while remaining > max_vertices:
        _, i, ver = heapq.heappop(heap)
        if not alive[i] or ver != version[i]:
            continue  # stale entry: the vertex was removed or its area changed
        alive[i] = False
        remaining -= 1
        a, c = prev[i], nxt[i]
        nxt[a], prev[c] = c, a
        for j in (a, c):
            version[j] += 1
            heapq.heappush(heap, (area(j), j, version[j]))
    return p[np.array(alive)]


# --------------------------------------------------------------------------------------------------
# Quantile regions
# --------------------------------------------------------------------------------------------------


def _closed_mask(v: np.ndarray, lo: float | None, hi: float | None) -> BoolArray:
    m = ~np.isnan(v)
    if lo is not None:
        m &= v >= lo
    if hi is not None:
        m &= v <= hi
    return m


def quantile_edges(values: npt.ArrayLike, qs: npt.ArrayLike) -> FloatArray:
    """``numpy.quantile`` (linear) of the finite ``values`` at ``qs``, in float64; empty input -> NaN."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    q = np.asarray(qs, dtype=np.float64)
    if v.size == 0:
        return np.full(q.shape, np.nan)
    return np.asarray(np.quantile(v, q), dtype=np.float64)


def _population(x: np.ndarray, y: np.ndarray) -> BoolArray:
    return np.isfinite(x) & np.isfinite(y)


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
    xa, ya = (a.astype(np.float64, copy=False) for a in _xy(x, y))
    pop = _population(xa, ya)
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


def _round_half_up(v: float) -> int:
    return math.floor(v + 0.5)


def _top(x: np.ndarray, y: np.ndarray, percent: float, axes: str) -> BoolArray:
    pop = _population(x, y)
    idx = np.flatnonzero(pop)
    m = idx.size
    k = _round_half_up(percent * m / 100.0)
    score: np.ndarray
    if axes == "x":
        score = x[idx]
    elif axes == "y":
        score = y[idx]
    else:
        # Quantile rank = (values strictly below) / m on each axis; the common denominator drops out.
        score = np.minimum(_min_ranks(x[idx]), _min_ranks(y[idx]))
    out = np.zeros(x.shape, dtype=bool)
    out[idx[_top_k_stable(score, k)]] = True
    return out


def _xy(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    xa = _as_coords(x, "x")
    ya = _as_coords(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.shape[0]} vs {ya.shape[0]}")
    return xa, ya


def region_mask(region: Region | dict[str, Any], x: npt.ArrayLike, y: npt.ArrayLike) -> BoolArray:
    """Which points ``(x[i], y[i])`` the region holds (rules in the module docstring)."""
    r = region if isinstance(region, BaseModel) else parse_region(region)
    xa, ya = _xy(x, y)
    if isinstance(r, AllRegion):
        return np.ones(xa.shape, dtype=bool)
    if isinstance(r, PolygonRegion):
        return points_in_polygon(xa, ya, r.array())
    # float64 throughout: NumPy 2 would otherwise round Python-float bounds to float32 before comparing.
    xa = xa.astype(np.float64, copy=False)
    ya = ya.astype(np.float64, copy=False)
    match r:
        case BoxRegion():
            return _closed_mask(xa, *r.x) & _closed_mask(ya, *r.y) & _population(xa, ya)
        case QuantilesRegion():
            pop = _population(xa, ya)
            m = pop.copy()
            if r.x is not None:
                m &= _band(xa, pop, *r.x)
            if r.y is not None:
                m &= _band(ya, pop, *r.y)
            return m
        case GridRegion():
            # Cell (i, j) is the band [i/n, (i+1)/n] on x times [j/n, (j+1)/n] on y: the same edges
            # as grid_cells, at two quantiles per axis instead of n+1.
            pop = _population(xa, ya)
            i, j = r.cell
            return _band(xa, pop, i / r.n, (i + 1) / r.n) & _band(ya, pop, j / r.n, (j + 1) / r.n)
        case TopRegion():
            return _top(xa, ya, r.percent, r.axes)
    raise TypeError(f"not a region: {region!r}")


# --------------------------------------------------------------------------------------------------
# Sampling and curricula
# --------------------------------------------------------------------------------------------------


def _draw(candidates: IntArray, n: int, rng: np.random.Generator) -> IntArray:
    # Random-priority sampling: each candidate gets a uniform key, the n smallest keys win. With
    # candidates sorted, the result depends only on the set, n and the stream, and a smaller n with
    # the same seed gives a subset of a larger one.
    if n >= candidates.size:
        return candidates.copy()
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    keys = rng.random(candidates.size)
    return np.sort(candidates[np.argpartition(keys, n - 1)[:n]])


def _rng(seed: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.Generator(np.random.PCG64(int(seed)))


def sample_indices(indices: npt.ArrayLike, n: int, seed: int) -> IntArray:
    """``n`` of ``indices`` uniformly at random without replacement, reproducible from ``seed``; sorted.

    Input order and duplicates do not matter (the set is used); ``n >= len`` returns them all.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cand = np.unique(np.asarray(indices, dtype=np.int64))
    return _draw(cand, n, _rng(seed))


def curriculum_stages(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    eligible: npt.ArrayLike | None,
    stages: int,
    x_min: float | None,
    y_min: float | None,
    dx: float,
    dy: float,
    per_stage: int,
    seed: int,
    disjoint: bool = True,
) -> list[IntArray]:
    """The paper's builder: stage k keeps ``x >= x_min + k*dx and y >= y_min + k*dy`` (k from 0).

    Candidates are eligible points with finite x and y; ``x_min``/``y_min`` default to their minima.
    Each stage draws ``per_stage`` of its candidates (all if fewer) from one PCG64(seed) stream, stages in
    order; with ``disjoint`` a point drawn earlier is no longer a candidate. Returns sorted indices.
    """
    xa, ya = (a.astype(np.float64, copy=False) for a in _xy(x, y))
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    if per_stage < 0:
        raise ValueError(f"per_stage must be >= 0, got {per_stage}")
    for name, v in (("dx", dx), ("dy", dy), ("x_min", x_min), ("y_min", y_min)):
        if v is not None and not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
    base = _population(xa, ya)
    if eligible is not None:
        el = np.asarray(eligible, dtype=bool)
        if el.shape != xa.shape:
            raise ValueError(f"eligible has shape {el.shape}, expected {xa.shape}")
        base &= el
    rng = _rng(seed)
    out: list[IntArray] = []
    if not base.any():
        return [np.empty(0, dtype=np.int64) for _ in range(stages)]
    x0 = float(xa[base].min()) if x_min is None else float(x_min)
    y0 = float(ya[base].min()) if y_min is None else float(y_min)
    free = base.copy()
    for k in range(stages):
        keep = free & (xa >= x0 + k * dx) & (ya >= y0 + k * dy)
        drawn = _draw(np.flatnonzero(keep).astype(np.int64), per_stage, rng)
        out.append(drawn)
        if disjoint:
            free[drawn] = False
    return out
