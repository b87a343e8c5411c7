"""Tests for backend.regions: polygon membership, quantile regions, sampling and curricula."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from backend.regions import (
    AllRegion,
    BoxRegion,
    CurriculumBuilder,
    GridRegion,
    PolygonRegion,
    QuantilesRegion,
    RangeFilter,
    Sample,
    TopRegion,
    curriculum_stages,
    grid_cells,
    parse_region,
    points_in_polygon,
    quantile_edges,
    region_mask,
    sample_indices,
    simplify_polygon,
)
from backend.regions import polygon as pip

# No example database: tests must not write outside the checkout's ignored paths.
HYP = settings(deadline=None, database=None, max_examples=60)


# ---------------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------------


def exact_contains(px: float, py: float, poly: list[tuple[float, float]]) -> bool:
    """The documented rule in exact rational arithmetic: count edges with y0 <= py < y1 whose crossing
    with the line y = py lies strictly right of the point (even-odd)."""
    if not (math.isfinite(px) and math.isfinite(py)):
        return False
    X, Y = Fraction(px), Fraction(py)
    inside = False
    k = len(poly)
    for a in range(k):
        (xa, ya), (xb, yb) = poly[a], poly[(a + 1) % k]
        if ya == yb:
            continue
        if ya > yb:
            xa, ya, xb, yb = xb, yb, xa, ya
        y0, y1 = Fraction(ya), Fraction(yb)
        if y0 <= Y < y1:
            x_cross = Fraction(xa) + (Y - y0) * (Fraction(xb) - Fraction(xa)) / (y1 - y0)
            if x_cross > X:
                inside = not inside
    return inside


def float_contains(px: float, py: float, poly: list[tuple[float, float]]) -> bool:
    """The textbook float crossing-number test (PNPOLY), pure Python, edges in input orientation."""
    if not (math.isfinite(px) and math.isfinite(py)):
        return False
    inside = False
    k = len(poly)
    for a in range(k):
        (xa, ya), (xb, yb) = poly[a], poly[(a + 1) % k]
        if (ya > py) != (yb > py) and px < xa + (py - ya) * (xb - xa) / (yb - ya):
            inside = not inside
    return inside


def dist_to_boundary(px: float, py: float, poly: np.ndarray) -> float:
    a = poly
    b = np.roll(poly, -1, axis=0)
    d = b - a
    t = np.clip(((px - a[:, 0]) * d[:, 0] + (py - a[:, 1]) * d[:, 1]) / np.maximum((d**2).sum(1), 1e-300), 0, 1)
    return float(np.hypot(a[:, 0] + t * d[:, 0] - px, a[:, 1] + t * d[:, 1] - py).min())


def both_paths(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Run the plain slab path and the rastered path; they must agree bit for bit."""
    p = pip._as_polygon(poly)
    plain = pip._points_in_polygon(np.ascontiguousarray(x), np.ascontiguousarray(y), p, 0)
    for side in (7, 64):
        rastered = pip._points_in_polygon(np.ascontiguousarray(x), np.ascontiguousarray(y), p, side)
        np.testing.assert_array_equal(rastered, plain)
    np.testing.assert_array_equal(points_in_polygon(x, y, poly), plain)
    return plain


# ---------------------------------------------------------------------------------------------------
# points_in_polygon
# ---------------------------------------------------------------------------------------------------

SQUARE = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)


def test_boundary_rule_on_unit_square() -> None:
    pts = {
        (0.5, 0.5): True,
        (0.0, 0.5): True,  # left edge: in
        (0.5, 0.0): True,  # bottom edge: in
        (1.0, 0.5): False,  # right edge: out
        (0.5, 1.0): False,  # top edge: out
        (0.0, 0.0): True,  # bottom-left corner only
        (1.0, 0.0): False,
        (1.0, 1.0): False,
        (0.0, 1.0): False,
        (-1e-9, 0.5): False,
        (0.5, -1e-9): False,
    }
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    got = both_paths(x, y, SQUARE)
    assert dict(zip(pts, got.tolist(), strict=True)) == pts
    # Orientation and starting vertex do not matter.
    for poly in (SQUARE[::-1], np.roll(SQUARE, 1, axis=0), np.roll(SQUARE[::-1], 2, axis=0)):
        np.testing.assert_array_equal(both_paths(x, y, poly), got)


lattice_polys = st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=3, max_size=14)


@HYP
@given(lattice_polys)
def test_lattice_polygons_match_exact_reference(verts: list[tuple[int, int]]) -> None:
    # Small integers: every float operation in the kernel is exact, so it must equal exact arithmetic
    # everywhere, on edges and vertices too. Polygons are arbitrary: concave, self-intersecting,
    # self-touching, repeated and collinear vertices.
    poly = [(float(a) / 2, float(b) / 2) for a, b in verts]
    g = np.arange(-2, 19) / 4  # quarter-lattice: vertices, edge points and interiors
    gx, gy = np.meshgrid(g, g)
    x, y = gx.ravel(), gy.ravel()
    want = np.array([exact_contains(a, b, poly) for a, b in zip(x.tolist(), y.tolist(), strict=True)])
    np.testing.assert_array_equal(both_paths(x, y, np.array(poly)), want)


def _families(rng: np.random.Generator) -> dict[str, np.ndarray]:
    th = np.sort(rng.uniform(0, 2 * np.pi, 40))
    star_r = np.where(np.arange(24) % 2 == 0, 1.0, 0.35)
    star_t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    lasso_t = np.sort(rng.uniform(0, 2 * np.pi, 200))
    lasso_r = 1 + 0.3 * np.cos(3 * lasso_t + 1) + 0.02 * rng.standard_normal(200)
    return {
        "convex": np.c_[np.cos(th), np.sin(th)] * [3.0, 0.2] + [5.0, 0.3],
        "star": np.c_[star_r * np.cos(star_t), star_r * np.sin(star_t)],
        "lasso": np.c_[lasso_r * np.cos(lasso_t), lasso_r * np.sin(lasso_t)] * 0.1 + [0.3, 0.7],
        "sliver": np.array([[0.0, 0.0], [1.0, 1e-7], [1.0, 2e-7], [0.5, 1.5e-7]]),
        "diagonal sliver": np.array([[0.0, 0.0], [1.0, 1.0], [1.0 + 1e-6, 1.0]]),
        "bow tie": np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]),
        "self-touching": np.array([[0, 0], [2, 0], [1, 1], [2, 2], [0, 2], [1, 1]], dtype=float) * 0.37,
        "random mess": rng.uniform(-1, 1, (30, 2)),
    }


@pytest.mark.parametrize("family", list(_families(np.random.default_rng(0))))
def test_random_polygons_match_brute_force(family: str) -> None:
    rng = np.random.default_rng(abs(hash(family)) % 2**32)
    poly = _families(rng)[family]
    lo, hi = poly.min(0), poly.max(0)
    pad = (hi - lo) * 0.1
    n = 3000
    x = rng.uniform(lo[0] - pad[0], hi[0] + pad[0], n)
    y = rng.uniform(lo[1] - pad[1], hi[1] + pad[1], n)
    # Add the vertices themselves and points on the edges (up to rounding).
    t = rng.uniform(0, 1, len(poly))
    nxt = np.roll(poly, -1, axis=0)
    on = poly + t[:, None] * (nxt - poly)
    x = np.concatenate([x, poly[:, 0], on[:, 0]]).astype(np.float32)
    y = np.concatenate([y, poly[:, 1], on[:, 1]]).astype(np.float32)
    got = both_paths(x, y, poly)
    pl = [tuple(map(float, v)) for v in poly]
    ref = np.array([float_contains(a, b, pl) for a, b in zip(x.tolist(), y.tolist(), strict=True)])
    for i in np.flatnonzero(got != ref):
        # The textbook formula rounds differently; where they differ the point must sit on the boundary
        # and the kernel must agree with exact arithmetic or be within rounding of an edge.
        px, py = float(x[i]), float(y[i])
        assert got[i] == exact_contains(px, py, pl) or dist_to_boundary(px, py, poly) < 1e-12
        assert dist_to_boundary(px, py, poly) < 1e-9
    assert (got != ref).sum() <= len(poly) * 2


def test_big_random_lasso_equals_vectorised_textbook_test() -> None:
    rng = np.random.default_rng(7)
    n = 200_000
    x = rng.normal(size=n).astype(np.float32)
    y = rng.normal(size=n).astype(np.float32)
    for k in (64, 1000):
        t = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = 1.2 + 0.4 * np.cos(5 * t) + 0.05 * rng.standard_normal(k)
        poly = np.c_[r * np.cos(t), r * np.sin(t)]
        got = both_paths(x, y, poly)
        px, py = x.astype(np.float64), y.astype(np.float64)
        ref = np.zeros(n, dtype=bool)
        for (xa, ya), (xb, yb) in zip(poly, np.roll(poly, -1, axis=0), strict=True):
            ref ^= ((ya > py) != (yb > py)) & (px < xa + (py - ya) * (xb - xa) / (yb - ya))
        np.testing.assert_array_equal(got, ref)
        assert 0.2 * n < got.sum() < 0.9 * n


def _split_square(shared: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the unit square along a polyline from bottom (y=0) to top (y=1): left piece, right piece, square."""
    left = np.vstack([[[0.0, 0.0]], shared, [[0.0, 1.0]]])
    right = np.vstack([shared, [[1.0, 1.0]], [[1.0, 0.0]]])[::-1]  # opposite orientation on purpose
    return left, right, SQUARE


@pytest.mark.parametrize(
    "cut",
    [
        np.array([[0.5, 0.0], [0.5, 1.0]]),  # vertical shared edge
        np.array([[0.0, 0.0], [1.0, 1.0]]),  # the diagonal
        np.array([[0.3, 0.0], [0.7, 0.25], [0.2, 0.5], [0.8, 0.75], [0.4, 1.0]]),  # zig-zag
        np.array([[0.1, 0.0], [0.123456789, 0.3333333333], [0.9876543, 0.71717171], [0.3, 1.0]]),
    ],
)
def test_pieces_sharing_an_edge_never_both_contain_a_point(cut: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    left, right, square = _split_square(cut)
    pts = [rng.uniform(-0.05, 1.05, (20_000, 2))]
    g = np.linspace(0, 1, 41)
    pts.append(np.array(np.meshgrid(g, g)).reshape(2, -1).T)
    for a, b in itertools.pairwise(cut):  # points on the shared edge, up to rounding
        t = np.r_[0.0, rng.uniform(0, 1, 500), 1.0]
        pts.append(a + t[:, None] * (b - a))
    for dtype in (np.float32, np.float64):
        p = np.vstack(pts).astype(dtype)
        x, y = p[:, 0], p[:, 1]
        in_l, in_r, in_sq = (both_paths(x, y, poly) for poly in (left, right, square))
        assert not (in_l & in_r).any()
        np.testing.assert_array_equal(in_l | in_r, in_sq)


def test_jittered_tiling_gives_every_point_exactly_one_tile() -> None:
    rng = np.random.default_rng(3)
    m = 6
    v = np.stack(np.meshgrid(np.linspace(0, 1, m + 1), np.linspace(0, 1, m + 1), indexing="ij"), -1)
    jit = rng.uniform(-0.3, 0.3, v.shape) / m
    jit[[0, -1], :, 0] = 0  # the outer border stays on the square
    jit[:, [0, -1], 1] = 0
    v = v + jit
    tiles = [np.array([v[i, j], v[i + 1, j], v[i + 1, j + 1], v[i, j + 1]]) for i in range(m) for j in range(m)]
    outline = np.vstack([v[:, 0], v[-1, 1:], v[-2::-1, -1], v[0, -2:0:-1]])
    p = np.vstack([rng.uniform(-0.05, 1.05, (50_000, 2)), v.reshape(-1, 2)])
    for i in range(m + 1):  # points on the internal edges
        for j in range(m):
            t = rng.uniform(0, 1, (20, 1))
            p = np.vstack([p, v[i, j] + t * (v[i, j + 1] - v[i, j]), v[j, i] + t * (v[j + 1, i] - v[j, i])])
    x, y = p[:, 0], p[:, 1]
    count = sum(both_paths(x, y, tile).astype(int) for tile in tiles)
    np.testing.assert_array_equal(count, both_paths(x, y, outline).astype(int))


def test_nan_and_inf_points_are_outside() -> None:
    n = 10_000  # above the raster threshold
    x = np.full(n, 0.5, dtype=np.float32)
    y = np.full(n, 0.5, dtype=np.float32)
    x[::3] = np.nan
    y[1::3] = np.nan
    x[2::7] = np.inf
    y[5::11] = -np.inf
    got = points_in_polygon(x, y, SQUARE)
    np.testing.assert_array_equal(got, np.isfinite(x) & np.isfinite(y))
    big = np.array([[-1e300, -1e300], [1e300, -1e300], [0, 1e300]])
    assert not points_in_polygon(np.array([np.nan, np.inf]), np.array([0.0, 0.0]), big).any()


def test_float32_and_float64_inputs_agree() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=50_000).astype(np.float32)
    y = rng.normal(size=50_000).astype(np.float32)
    poly = _families(rng)["star"]
    np.testing.assert_array_equal(
        points_in_polygon(x, y, poly), points_in_polygon(x.astype(np.float64), y.astype(np.float64), poly)
    )
    ints = points_in_polygon(np.array([0, 1, 2]), np.array([0, 0, 0]), SQUARE * 2)
    assert ints.tolist() == [True, True, False]


def test_degenerate_polygons_contain_nothing() -> None:
    x = np.linspace(-1, 2, 10_000)
    y = np.linspace(-1, 2, 10_000)
    for poly in ([[0, 0], [1, 1], [2, 2]], [[0, 0], [1, 0], [2, 0]], [[0, 0], [0, 1], [0, 0.5]]):
        assert not points_in_polygon(x, y, poly).any()
    assert points_in_polygon(np.zeros(0, np.float32), np.zeros(0, np.float32), SQUARE).shape == (0,)


def test_low_level_input_errors() -> None:
    x = np.zeros(3)
    with pytest.raises(ValueError, match="finite"):
        points_in_polygon(x, x, [[0, 0], [1, np.nan], [1, 1]])
    with pytest.raises(ValueError, match="at least 3"):
        points_in_polygon(x, x, [[0, 0], [1, 1]])
    with pytest.raises(ValueError, match=r"shape \(k, 2\)"):
        points_in_polygon(x, x, [[0, 0, 0], [1, 1, 1], [2, 2, 2]])
    with pytest.raises(ValueError, match="differ in length"):
        points_in_polygon(x, np.zeros(4), SQUARE)


def test_concurrent_calls_are_safe() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=100_000).astype(np.float32)
    y = rng.normal(size=100_000).astype(np.float32)
    poly = _families(rng)["lasso"] * 5
    want = points_in_polygon(x, y, poly)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: points_in_polygon(x, y, poly), range(16)))
    for r in results:
        np.testing.assert_array_equal(r, want)


# ---------------------------------------------------------------------------------------------------
# Validation of region shapes
# ---------------------------------------------------------------------------------------------------


def test_polygon_validation_messages() -> None:
    ok = parse_region({"type": "polygon", "points": [[0, 0], [1, 0], [0, 1]]})
    assert isinstance(ok, PolygonRegion)
    assert ok.array().shape == (3, 2)
    cases = {
        "finite": [[0, 0], [1, float("nan")], [0, 1]],
        "finite ": [[0, 0], [1, float("inf")], [0, 1]],
        "at least 3 vertices, got 2": [[0, 0], [1, 0]],
        "at most 1000 vertices, got 1001": [[i, i % 7] for i in range(1001)],
        "at most 2 items": [[0, 0, 0], [1, 0], [0, 1]],
    }
    for needle, pts in cases.items():
        with pytest.raises(ValidationError, match=needle.strip()):
            parse_region({"type": "polygon", "points": pts})
    assert isinstance(parse_region({"type": "polygon", "points": [[i, i % 7] for i in range(1000)]}), PolygonRegion)


def test_million_vertex_polygon_is_rejected_fast() -> None:
    pts = [[float(i), 0.0] for i in range(1_000_000)]
    t = time.perf_counter()
    with pytest.raises(ValidationError) as err:
        parse_region({"type": "polygon", "points": pts})
    assert time.perf_counter() - t < 0.05  # the count is checked before any vertex is parsed
    # Rendering must leave the input out: str(err) would repr the million vertices (~0.5 s).
    (e,) = err.value.errors(include_input=False, include_url=False)
    assert "at most 1000 vertices, got 1000000" in e["msg"]


def test_region_union_and_errors() -> None:
    assert isinstance(parse_region({"type": "all"}), AllRegion)
    assert isinstance(parse_region({"type": "box", "x": [0, None]}), BoxRegion)
    assert isinstance(parse_region({"type": "quantiles", "y": [0.95, 1]}), QuantilesRegion)
    assert isinstance(parse_region({"type": "grid", "cell": [2, 2]}), GridRegion)
    top = parse_region({"type": "top", "percent": 5, "axes": "x"})
    assert isinstance(top, TopRegion) and top.percent == 5
    assert parse_region(top) == top
    bad = {
        "type": {"type": "lasso", "points": []},
        "cell": {"type": "grid", "n": 3, "cell": [3, 0]},
        "qlo < qhi": {"type": "quantiles", "x": [0.5, 0.5]},
        "less than or equal to 1": {"type": "quantiles", "x": [0.5, 1.5]},
        "x, y or both": {"type": "quantiles"},
        "greater than 0": {"type": "top", "percent": 0},
        "less than or equal to 100": {"type": "top", "percent": 101},
        "'x', 'y' or 'both'": {"type": "top", "percent": 5, "axes": "z"},
        "above upper": {"type": "box", "x": [2, 1]},
        "Extra inputs": {"type": "all", "sample": 3},
    }
    for needle, obj in bad.items():
        with pytest.raises(ValidationError, match=needle):
            parse_region(obj)


def test_sample_range_and_builder_models() -> None:
    assert Sample(n=5).seed == 0
    with pytest.raises(ValidationError):
        Sample(n=0, seed=1)
    with pytest.raises(ValidationError):
        Sample(n=3, seed=-1)
    rf = RangeFilter(axis="3:loss_sum", min=1.0)
    np.testing.assert_array_equal(rf.mask([0.5, 1.0, 2.0, np.nan]), [False, True, True, False])
    rf2 = RangeFilter(axis="clip", min=0.1, max=0.1)
    assert rf2.mask(np.array([0.1], dtype=np.float32)).tolist() == [False]  # float32(0.1) > 0.1
    with pytest.raises(ValidationError, match="min, max or both"):
        RangeFilter(axis="clip")
    with pytest.raises(ValidationError, match="above upper"):
        RangeFilter(axis="clip", min=2, max=1)
    with pytest.raises(ValidationError, match="finite"):
        RangeFilter(axis="clip", min=float("nan"))
    b = CurriculumBuilder(stages=3, dx=0.5, dy=0.01, per_stage=10, seed=4)
    x = np.arange(100.0)
    out = curriculum_stages(x, x / 100, None, **b.model_dump())
    assert len(out) == 3


# ---------------------------------------------------------------------------------------------------
# Box, quantiles, grid, top
# ---------------------------------------------------------------------------------------------------


def test_box_is_closed_with_open_sides_and_float64_bounds() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0, np.nan, 1.5], dtype=np.float32)
    y = np.array([0.0, 0.0, 0.0, 0.0, 0.0, np.nan], dtype=np.float32)
    assert region_mask({"type": "box", "x": [1, 2], "y": [0, 0]}, x, y).tolist() == [0, 1, 1, 0, 0, 0]
    assert region_mask({"type": "box", "x": [None, 1]}, x, y).tolist() == [1, 1, 0, 0, 0, 0]
    assert region_mask({"type": "box"}, x, y).tolist() == [1, 1, 1, 1, 0, 0]
    # Bounds compare in float64: float32(0.1) = 0.10000000149 lies above 0.1.
    v = np.array([0.1], dtype=np.float32)
    assert not region_mask({"type": "box", "x": [None, 0.1]}, v, v)[0]
    assert region_mask({"type": "box", "x": [0.1, None]}, v, v)[0]


def test_all_takes_every_point() -> None:
    x = np.array([np.nan, 1.0, 2.0])
    assert region_mask(AllRegion(), x, x).all()


tied_values = st.lists(
    st.one_of(st.integers(0, 4).map(float), st.just(float("nan")), st.floats(-10, 10)), min_size=0, max_size=80
)


@HYP
@given(tied_values, tied_values, st.integers(1, 6))
def test_grid_cells_partition_the_population(xs: list[float], ys: list[float], n: int) -> None:
    m = min(len(xs), len(ys))
    x, y = np.array(xs[:m], dtype=np.float64), np.array(ys[:m], dtype=np.float64)
    pop = np.isfinite(x) & np.isfinite(y)
    count = np.zeros(m, dtype=int)
    ci, cj = grid_cells(x, y, n)
    for i in range(n):
        for j in range(n):
            cell = region_mask({"type": "grid", "n": n, "cell": [i, j]}, x, y)
            np.testing.assert_array_equal(cell, (ci == i) & (cj == j))
            count += cell
    np.testing.assert_array_equal(count, pop.astype(int))
    assert ((ci >= 0) == pop).all() and ((cj >= 0) == pop).all()


@HYP
@given(tied_values, st.lists(st.floats(0.01, 0.99), min_size=1, max_size=5, unique=True))
def test_quantile_bands_partition_each_axis(vals: list[float], cuts: list[float]) -> None:
    v = np.array(vals, dtype=np.float32)
    other = np.zeros_like(v)
    qs = [0.0, *sorted(cuts), 1.0]
    pop = np.isfinite(v)
    count = np.zeros(len(v), dtype=int)
    for lo, hi in itertools.pairwise(qs):
        bx = region_mask({"type": "quantiles", "x": [lo, hi]}, v, other)
        by = region_mask({"type": "quantiles", "y": [lo, hi]}, other, v)
        np.testing.assert_array_equal(bx, by)
        e_lo, e_hi = np.quantile(v[pop].astype(np.float64), [lo, hi]) if pop.any() else (np.nan, np.nan)
        vv = v.astype(np.float64)
        want = pop & (vv >= e_lo) & ((vv <= e_hi) if hi == 1.0 else (vv < e_hi))
        np.testing.assert_array_equal(bx, want)
        count += bx
    np.testing.assert_array_equal(count, pop.astype(int))


def test_quantile_band_sizes_without_ties_and_two_axis_band() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 10_000))
    top = region_mask({"type": "quantiles", "x": [0.95, 1.0]}, x, y)
    assert abs(int(top.sum()) - 500) <= 1
    both = region_mask(QuantilesRegion(x=(0.9, 1.0), y=(0.9, 1.0)), x, y)
    np.testing.assert_array_equal(
        both,
        region_mask({"type": "quantiles", "x": [0.9, 1]}, x, y)
        & region_mask({"type": "quantiles", "y": [0.9, 1]}, x, y),
    )
    # The top-right cell of a 3x3 grid is the band [2/3, 1] on both axes.
    np.testing.assert_array_equal(
        region_mask({"type": "grid", "n": 3, "cell": [2, 2]}, x, y),
        region_mask({"type": "quantiles", "x": [2 / 3, 1], "y": [2 / 3, 1]}, x, y),
    )
    assert np.isnan(quantile_edges([np.nan], [0.5])).all()


def _round_half_up(v: float) -> int:
    return int(Fraction(v) + Fraction(1, 2)) if v >= 0 else 0


def brute_top(x: np.ndarray, y: np.ndarray, percent: float, axes: str) -> set[int]:
    pop = [i for i in range(len(x)) if math.isfinite(x[i]) and math.isfinite(y[i])]
    k = _round_half_up(percent * len(pop) / 100)

    def rank(v: np.ndarray, i: int) -> int:
        return sum(1 for j in pop if v[j] < v[i])

    def score(i: int) -> float:
        if axes == "x":
            return float(x[i])
        if axes == "y":
            return float(y[i])
        return min(rank(x, i), rank(y, i))

    return set(sorted(pop, key=lambda i: (-score(i), i))[:k])


heavy_ties = st.lists(st.integers(0, 3).map(float), min_size=0, max_size=40)


@HYP
@given(
    st.one_of(tied_values, heavy_ties),
    st.one_of(tied_values, heavy_ties),
    st.floats(0.5, 100),
    st.sampled_from(["x", "y", "both"]),
)
def test_top_percent_matches_brute_force(xs: list[float], ys: list[float], p: float, axes: str) -> None:
    m = min(len(xs), len(ys))
    x, y = np.array(xs[:m]), np.array(ys[:m])
    got = region_mask({"type": "top", "percent": p, "axes": axes}, x, y)
    assert set(np.flatnonzero(got).tolist()) == brute_top(x, y, p, axes)


def test_top_both_ranks_ties_equally() -> None:
    # Tied values share a quantile rank: x ranks (1, 1, 0), y ranks (0, 0, 0) -> all score 0, so the
    # single point taken is the lowest index, whatever order a sort put the ties in.
    x, y = np.array([1.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0])
    assert region_mask({"type": "top", "percent": 34, "axes": "both"}, x, y).tolist() == [True, False, False]
    x, y = np.array([3.0, 1.0, 2.0, 2.0]), np.array([0.0, 3.0, 2.0, 2.0])
    # ranks x (3, 0, 1, 1), y (0, 3, 1, 1): min (0, 0, 1, 1) -> the two middle points form the corner.
    assert region_mask({"type": "top", "percent": 50, "axes": "both"}, x, y).tolist() == [0, 0, 1, 1]


def reference_diq(x: np.ndarray, y: np.ndarray, p: float) -> np.ndarray:
    """The rule ranked in full: every point's min(rank on x, rank on y), the k largest, ties to low positions."""
    from backend.regions.masks import _min_ranks, _round_half_up, _top_k_stable

    pop = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    k = _round_half_up(p * pop.size / 100.0)
    return pop[_top_k_stable(np.minimum(_min_ranks(x[pop]), _min_ranks(y[pop])), k)]


@pytest.mark.parametrize(
    "shape", ["independent", "correlated", "anti-correlated", "ties", "one value", "float32", "float32 tokens"]
)
def test_top_both_ranks_only_the_top_and_agrees_with_ranking_everything(shape: str) -> None:
    # Large enough (300k) that the sampled threshold and the partial sorts are what runs; anti-correlated axes
    # put the corner's threshold far from where independent ones would, ties make ranks coarse. float32
    # values (a plane's columns) take the float32 sort; token counts put big tie groups at the sampled cut.
    rng = np.random.default_rng(11)
    n = 300_000
    x = rng.normal(size=n)
    y = {
        "independent": rng.normal(size=n),
        "correlated": x + rng.normal(scale=0.3, size=n),
        "anti-correlated": -x + rng.normal(scale=0.05, size=n),
        "ties": rng.integers(0, 5, n).astype(float),
        "one value": np.zeros(n),
        "float32": rng.normal(size=n).astype(np.float32),
        "float32 tokens": np.floor(rng.gamma(2.0, 60.0, n)).astype(np.float32),
    }[shape]
    if shape == "ties":
        x = x.round(0)
    if shape.startswith("float32"):
        x = (x if shape == "float32" else rng.integers(8, 40, n).astype(float)).astype(np.float32)
    x[:25] = np.nan
    for p in (0.01, 1, 10, 37.5, 99.9):
        got = np.flatnonzero(region_mask({"type": "top", "percent": p, "axes": "both"}, x, y))
        assert np.array_equal(got, reference_diq(x, y, p)), (shape, p)


@pytest.mark.parametrize(
    ("bounds", "widened"),
    [
        (lambda m: (m - 1, m), "down"),  # the sample placed the threshold far too high
        (lambda m: (int(0.30 * m), int(0.35 * m)), "up"),  # ... or too low (it lies near 0.55 m here)
        (lambda m: (int(0.60 * m), int(0.40 * m)), "both"),  # ... or gave an empty window
    ],
)
def test_top_both_widens_when_the_sampled_window_misses(
    monkeypatch: pytest.MonkeyPatch, bounds: Callable[[int], tuple[int, int]], widened: str
) -> None:
    from backend.regions import masks

    windows: list[tuple[int, int]] = []
    real = masks._window
    monkeypatch.setattr(masks, "_diq_bounds", lambda x, y, k: bounds(x.shape[0]))
    monkeypatch.setattr(masks, "_window", lambda v, lo, hi: windows.append((lo, hi)) or real(v, lo, hi))
    monkeypatch.setattr(masks, "ESTIMATE_POINTS", 1000)  # so the cuts come from a sample, as at scale
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=5000).round(1), rng.normal(size=5000).round(1)
    got = np.flatnonzero(region_mask({"type": "top", "percent": 20, "axes": "both"}, x, y))
    assert np.array_equal(got, reference_diq(x, y, 20))
    first = windows[0]
    assert first == bounds(5000) and len(windows) > 2  # (one pair of calls per attempt: x and y)
    went_down = any(lo < first[0] for lo, _ in windows)
    went_up = first[1] < 5000 and any(hi == 5000 for _, hi in windows)
    assert went_down is (widened in ("down", "both")) and went_up is (widened in ("up", "both"))


def test_top_counts_ties_and_directions() -> None:
    rng = np.random.default_rng(2)
    n = 100_003
    x = rng.integers(0, 50, n).astype(np.float32)  # heavy ties
    y = rng.normal(size=n).astype(np.float32)
    x[:10] = np.nan
    m = n - 10
    for p in (0.5, 5, 10, 15, 33.3, 100):
        for axes in ("x", "y", "both"):
            sel = region_mask({"type": "top", "percent": p, "axes": axes}, x, y)
            assert sel.sum() == math.floor(p * m / 100 + 0.5)
            assert not sel[:10].any()
        sel = region_mask({"type": "top", "percent": p, "axes": "x"}, x, y)
        rest = ~sel & np.isfinite(x)
        if rest.any():
            t = x[sel].min()
            assert t >= x[rest].max()
            # at the threshold value, the lower indices were taken
            assert np.flatnonzero(sel & (x == t)).max() < np.flatnonzero(rest & (x == t)).min()
    # DIQ is the top-right corner: high on both axes.
    diq = region_mask({"type": "top", "percent": 5, "axes": "both"}, x, y)
    assert np.nanmean(x[diq]) > np.nanpercentile(x, 80) and y[diq].mean() > np.percentile(y[np.isfinite(x)], 80)
    small = np.arange(10.0)
    assert region_mask({"type": "top", "percent": 5, "axes": "x"}, small, small).tolist() == [0] * 9 + [1]
    assert not region_mask({"type": "top", "percent": 4.9, "axes": "x"}, small, small).any()


# ---------------------------------------------------------------------------------------------------
# Sampling and curricula
# ---------------------------------------------------------------------------------------------------


def test_sample_indices_reproducible_and_uniform() -> None:
    idx = np.arange(1000, 3000)
    a = sample_indices(idx, 100, seed=1)
    np.testing.assert_array_equal(a, sample_indices(idx, 100, seed=1))
    np.testing.assert_array_equal(a, sample_indices(idx[::-1], 100, seed=1))  # order does not matter
    np.testing.assert_array_equal(a, sample_indices(np.r_[idx, idx[:50]], 100, seed=1))  # nor duplicates
    assert a.size == 100 and np.unique(a).size == 100 and (np.diff(a) > 0).all()
    assert np.isin(a, idx).all()
    assert not np.array_equal(a, sample_indices(idx, 100, seed=2))
    assert set(sample_indices(idx, 40, seed=1)) <= set(a)  # smaller draws nest in larger ones
    np.testing.assert_array_equal(sample_indices(idx[::-1], 5000, seed=3), idx)
    assert sample_indices(idx, 0, seed=3).size == 0
    counts = np.zeros(100)
    for s in range(500):
        counts[sample_indices(np.arange(100), 10, s)] += 1
    assert counts.min() > 25 and counts.max() < 80  # expectation 50 each
    with pytest.raises(ValueError, match="seed"):
        sample_indices(idx, 3, seed=-1)
    with pytest.raises(ValueError, match="n must be"):
        sample_indices(idx, -1, seed=0)


@HYP
@given(
    st.integers(0, 10_000),
    st.integers(1, 5),
    st.integers(1, 400),
    st.floats(0, 2),
    st.floats(0, 0.02),
    st.booleans(),
)
def test_curriculum_follows_the_formula(
    seed: int, stages: int, per_stage: int, dx: float, dy: float, disjoint: bool
) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    x = rng.lognormal(1.5, 0.5, n).astype(np.float32)
    y = (0.28 + 0.04 * rng.standard_normal(n)).astype(np.float32)
    x[:5] = np.nan
    eligible = rng.uniform(size=n) < 0.8
    out = curriculum_stages(x, y, eligible, stages, None, None, dx, dy, per_stage, seed, disjoint)
    again = curriculum_stages(x, y, eligible, stages, None, None, dx, dy, per_stage, seed, disjoint)
    assert len(out) == stages
    base = eligible & np.isfinite(x) & np.isfinite(y)
    x0, y0 = float(x[base].min()), float(y[base].min())
    taken = np.zeros(n, dtype=bool)
    for k, (s, s2) in enumerate(zip(out, again, strict=True)):
        np.testing.assert_array_equal(s, s2)
        assert (np.diff(s) > 0).all()
        cand = base & (x.astype(np.float64) >= x0 + k * dx) & (y.astype(np.float64) >= y0 + k * dy)
        if disjoint:
            cand &= ~taken
        assert cand[s].all()
        assert s.size == min(per_stage, int(cand.sum()))
        taken[s] = True
    if disjoint and out:
        assert sum(s.size for s in out) == np.unique(np.concatenate(out)).size


def test_curriculum_explicit_minima_seeds_and_exhaustion() -> None:
    x = np.arange(10.0)
    y = np.arange(10.0) / 10
    out = curriculum_stages(x, y, None, stages=3, x_min=2, y_min=0.2, dx=2, dy=0.2, per_stage=3, seed=0)
    assert all((x[s] >= 2 + 2 * k).all() and (y[s] >= 0.2 + 0.2 * k - 1e-12).all() for k, s in enumerate(out))
    # Stage 2 keeps x >= 6: {6..9} minus what stages 0 and 1 took; it takes all that is left if short.
    left = set(range(6, 10)) - set(out[0].tolist()) - set(out[1].tolist())
    assert set(out[2].tolist()) == left if len(left) <= 3 else len(out[2]) == 3
    big = np.random.default_rng(0).uniform(size=(2, 5000))
    a = curriculum_stages(big[0], big[1], None, 3, None, None, 0.1, 0.1, 50, seed=1)
    b = curriculum_stages(big[0], big[1], None, 3, None, None, 0.1, 0.1, 50, seed=2)
    assert not all(np.array_equal(s, t) for s, t in zip(a, b, strict=True))
    shared = curriculum_stages(big[0], big[1], None, 2, None, None, 0.0, 0.0, 4000, seed=1, disjoint=False)
    assert shared[0].size == shared[1].size == 4000
    assert np.intersect1d(shared[0], shared[1]).size > 0
    empty = curriculum_stages(x, y, np.zeros(10, bool), 2, None, None, 1, 1, 5, seed=0)
    assert [s.size for s in empty] == [0, 0]
    with pytest.raises(ValueError, match="eligible"):
        curriculum_stages(x, y, np.zeros(3, bool), 2, None, None, 1, 1, 5, seed=0)
    with pytest.raises(ValueError, match="finite"):
        curriculum_stages(x, y, None, 2, None, None, float("nan"), 1, 5, seed=0)


# ---------------------------------------------------------------------------------------------------
# Lasso simplification
# ---------------------------------------------------------------------------------------------------


def test_simplify_polygon_keeps_the_shape() -> None:
    rng = np.random.default_rng(4)
    t = np.linspace(0, 2 * np.pi, 5000, endpoint=False)
    r = 1 + 0.3 * np.cos(3 * t) + 0.003 * rng.standard_normal(t.size)
    lasso = np.c_[r * np.cos(t), r * np.sin(t)]
    lasso = np.vstack([lasso, lasso[:1]])  # a closing duplicate, as UIs send
    s = simplify_polygon(lasso, 64)
    assert len(s) == 64
    pos = [int(np.flatnonzero((lasso == v).all(1))[0]) for v in s]
    assert pos == sorted(pos)  # a subsequence of the input
    g = np.linspace(-1.5, 1.5, 400)
    gx, gy = (a.ravel() for a in np.meshgrid(g, g))
    a, b = points_in_polygon(gx, gy, lasso), points_in_polygon(gx, gy, s)
    assert (a & b).sum() / (a | b).sum() > 0.97
    tri = np.array([[0, 0], [1, 0], [0, 1], [0, 1], [0, 0]], dtype=float)
    np.testing.assert_array_equal(simplify_polygon(tri), tri[:3])
    assert len(simplify_polygon(lasso, 3)) == 3
    with pytest.raises(ValueError, match="at least 3"):
        simplify_polygon(lasso, 2)
    with pytest.raises(ValueError, match="distinct"):
        simplify_polygon([[0, 0], [0, 0], [1, 1]])
    with pytest.raises(ValueError, match="finite"):
        simplify_polygon([[0, 0], [np.nan, 0], [1, 1]])
