"""Point in polygon (numba: a slab table of the edges, and a raster for big inputs) and lasso simplification.

Boundary points follow the half-open rule in :mod:`backend.regions`; NaN coordinates are outside.
"""

from __future__ import annotations

import heapq
import threading

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from backend.regions.arrays import BoolArray, FloatArray, as_coords

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

    Boundary points follow the half-open rule in :mod:`backend.regions`; NaN coordinates are outside.
    Self-intersecting polygons are allowed (even-odd). ``x``/``y`` float32 or float64, same length.
    """
    xa = as_coords(x, "x")
    ya = as_coords(y, "y")
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
