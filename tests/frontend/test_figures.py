"""The pure figure builders: sampling, binning, regions, shares, and the figures they make."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from frontend import figures as F
from frontend.figures import density


def cloud(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.lognormal(1.5, 0.6, n).astype(np.float32)
    y = (0.28 + 0.04 * rng.standard_normal(n)).astype(np.float32)
    return x, y


def test_histogram2d_matches_numpy() -> None:
    x, y = cloud(20_000)
    xr, yr = F.finite_range(x), F.finite_range(y)
    counts, xe, ye = F.histogram2d(x, y, 37, xr, yr)
    ref, rxe, rye = np.histogram2d(x.astype(np.float64), y.astype(np.float64), bins=37, range=[xr, yr])
    assert np.array_equal(counts, ref.T.astype(np.int64))
    assert np.allclose(xe, rxe) and np.allclose(ye, rye)
    # Points on the upper edge fall in the last bin; NaN and out-of-range points are left out.
    counts, _, _ = F.histogram2d([1.0, 0.0, np.nan, 5.0], [1.0, 0.0, 0.5, 0.5], 2, (0.0, 1.0), (0.0, 1.0))
    assert counts.sum() == 2 and counts[1, 1] == 1 and counts[0, 0] == 1


def test_water_level_is_exact() -> None:
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 500, 400)
    for budget in (10, 1000, int(counts.sum()) - 1):
        c = density.water_level(counts, budget)
        assert math.isclose(np.minimum(counts, c).sum(), budget, rel_tol=1e-9)


def test_density_sample_keeps_sparse_points_and_respects_budget() -> None:
    x, y = cloud(200_000)
    # A few far outliers in otherwise empty cells.
    x = np.concatenate([x, np.array([500, 520, 540], dtype=np.float32)])
    y = np.concatenate([y, np.array([0.9, 0.95, 0.05], dtype=np.float32)])
    keep = F.density_sample(x, y, 20_000, seed=3)
    assert keep.size <= 20_000 and keep.size >= 18_000
    assert np.all(np.diff(keep) > 0)
    assert {200_000, 200_001, 200_002} <= set(keep.tolist())
    assert np.array_equal(keep, F.density_sample(x, y, 20_000, seed=3))
    # Dense cells are thinned more than sparse ones: the sample is flatter than the data.
    full, _, _ = F.histogram2d(x, y, 16, F.finite_range(x), F.finite_range(y))
    part, _, _ = F.histogram2d(x[keep], y[keep], 16, F.finite_range(x), F.finite_range(y))
    assert part.max() / max(part[part > 0].min(), 1) < full.max() / max(full[full > 0].min(), 1)


def test_density_sample_small_and_non_finite() -> None:
    x = np.array([1.0, np.nan, 3.0, np.inf], dtype=np.float32)
    y = np.array([1.0, 2.0, np.nan, 4.0], dtype=np.float32)
    assert F.density_sample(x, y, 10).tolist() == [0]
    assert F.density_sample(np.arange(10.0), np.arange(10.0), 0).size == 0


def test_hdr_levels_enclose_their_mass() -> None:
    x, y = cloud(50_000)
    counts, _, _ = F.histogram2d(x, y, 40, F.finite_range(x), F.finite_range(y))
    t50, t90 = F.hdr_levels(counts, (0.5, 0.9))
    assert t50 >= t90 > 0
    assert counts[counts >= t50].sum() >= 0.5 * counts.sum()
    assert counts[counts >= t90].sum() >= 0.9 * counts.sum()
    assert F.hdr_levels(np.zeros((3, 3))) == [0.0, 0.0]


def test_top_corner() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.random(1000), rng.random(1000)
    tx, ty = F.top_corner(x, y, 5, "x")
    assert ty is None and tx is not None and int((x >= tx).sum()) == 50
    tx, ty = F.top_corner(x, y, 10, "y")
    assert tx is None and ty is not None and int((y >= ty).sum()) == 100
    tx, ty = F.top_corner(x, y, 5, "both")
    assert tx is not None and ty is not None
    assert 50 <= int(((x >= tx) & (y >= ty)).sum()) <= 52
    assert F.top_corner([], [], 5, "both") == (None, None)


def test_category_colors_depend_only_on_the_set() -> None:
    a = F.category_colors(["b", "none", "a", "c"])
    b = F.category_colors(["c", "a", "b", "none"])
    assert a == b
    assert a["none"] == F.NEUTRAL
    assert len({a["a"], a["b"], a["c"]}) == 3


def test_shares() -> None:
    rows = F.shares({"a": 30, "b": 10}, {"a": 50, "b": 50, "c": 100})
    assert [r["task_type"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["share"] == pytest.approx(0.75) and rows[0]["base_share"] == pytest.approx(0.25)
    assert rows[0]["lift"] == pytest.approx(3.0)
    assert rows[2]["count"] == 0 and rows[2]["share"] == 0
    assert F.shares({}, {}) == []


def test_log_colorscale() -> None:
    scale = F.log_colorscale(F.DENSITY_SCALE, 1000)
    positions = [p for p, _ in scale]
    assert positions[0] == 0 and positions[-1] == 1 and positions == sorted(positions)
    # The middle stop sits near sqrt(1000) counts, far below the linear middle.
    assert scale[1][0] < 0.1


def _traces(fig: Any, kind: str) -> list[Any]:
    return [t for t in fig.data if t.type == kind]


def test_plane_figure_small_draws_every_point_by_category() -> None:
    x, y = cloud(3000)
    codes = np.arange(3000) % 3
    ids = np.arange(3000, dtype=np.int32) + 100
    fig, stats = F.plane_figure(x, y, ids, x_label="loss", y_label="clip", codes=codes, categories=["a", "b", "c"])
    pts = _traces(fig, "scattergl")
    assert not stats.density and stats.drawn == 3000
    assert sum(len(t.x) for t in pts) == 3000
    assert [t.name for t in pts] == ["a (1,000)", "b (1,000)", "c (1,000)"]
    # Ids ride along as customdata, aligned with the coordinates.
    first = pts[0]
    k = int(first.customdata[5]) - 100
    assert first.x[5] == x[k] and first.y[5] == y[k]
    # Stacked marginals count every point once per axis.
    bars = _traces(fig, "bar")
    top = [b for b in bars if b.yaxis == "y2"]
    assert sum(int(np.sum(b.y)) for b in top) == 3000
    assert fig.layout.xaxis.title.text == "loss" and fig.layout.dragmode == "drawclosedpath"


def test_plane_figure_large_uses_density_layer_and_sample() -> None:
    x, y = cloud(300_000)
    ids = np.arange(300_000, dtype=np.int32)
    fig, stats = F.plane_figure(x, y, ids, x_label="x", y_label="y", sample_budget=10_000)
    heat = _traces(fig, "heatmap")
    assert stats.density and len(heat) == 1
    assert int(np.nansum(heat[0].z)) == 300_000  # the density layer covers every point
    pts = _traces(fig, "scattergl")
    assert sum(len(t.x) for t in pts) == stats.drawn <= 10_000
    assert "density layer" in stats.caption()


def test_plane_figure_values_contours_shapes_and_empty() -> None:
    x, y = cloud(2000)
    v = x.copy()
    v[:10] = np.nan
    fig, _ = F.plane_figure(
        x, y, np.arange(2000), x_label="x", y_label="y", values=v, value_label="loss_mean",
        contour_codes=np.arange(2000) % 2, contour_names=["p", "q"],
        shapes=[{"type": "rect", "x0": 0, "x1": 1, "y0": 0, "y1": 1}],
    )  # fmt: skip
    pts = _traces(fig, "scattergl")
    assert pts[0].marker.colorbar.title.text == "loss_mean"
    assert pts[1].name == "no value" and len(pts[1].x) == 10
    assert [t.name for t in _traces(fig, "contour")] == ["p: 50% / 90% of its samples", "q: 50% / 90% of its samples"]
    assert len(fig.layout.shapes) == 1
    empty, stats = F.plane_figure([np.nan], [1.0], [1], x_label="x", y_label="y")
    assert stats.drawn == 0 and "No scored points" in empty.layout.annotations[0].text


def test_region_shapes() -> None:
    x, y = cloud(5000)
    poly = F.region_shapes({"type": "polygon", "points": [[1, 0.2], [5, 0.2], [5, 0.3]]}, x, y)
    assert poly[0]["type"] == "path" and poly[0]["path"].startswith("M 1.0,0.2") and poly[0]["editable"]
    box = F.region_shapes({"type": "box", "x": [1, None], "y": [None, 0.3]}, x, y)
    assert box[0]["x0"] == 1 and box[0]["x1"] == F.finite_range(x)[1] and box[0]["name"] == "qspace-region"
    grid = F.region_shapes({"type": "grid", "n": 3, "cell": [2, 2]}, x, y)
    assert sum(s["type"] == "line" for s in grid) == 4
    cell = grid[-1]
    assert cell["x0"] == pytest.approx(F.quantile_edges(x, 3)[2]) and cell["name"] == "qspace-preset"
    top = F.region_shapes({"type": "top", "percent": 5, "axes": "both"}, x, y)[0]
    # Display only: ties of the smaller rank may add a point or two to the server's exact 250.
    assert 250 <= int(((x >= top["x0"]) & (y >= top["y0"])).sum()) <= 253
    band = F.region_shapes({"type": "quantiles", "x": [0.5, 1.0]}, x, y)[0]
    assert band["x0"] == pytest.approx(float(np.quantile(x.astype(np.float64), 0.5)))
    assert F.region_shapes({"type": "all"}, x, y) == [] and F.region_shapes(None, x, y) == []


def test_curriculum_figure() -> None:
    x, y = cloud(30_000)
    thr = F.curriculum_thresholds(3, 2.0, 0.25, 1.0, 0.02)
    assert thr == [(2.0, 0.25), (3.0, 0.27), (4.0, pytest.approx(0.29))]
    fig = F.curriculum_figure(
        x,
        y,
        x_label="x",
        y_label="y",
        thresholds=thr,
        sizes=["1", "2", "3"],
        names=["initialization", "intermediate", "advanced"],
    )
    assert len(fig.layout.shapes) == 6
    assert [a.text for a in fig.layout.annotations] == ["initialization · 1", "intermediate · 2", "advanced · 3"]
    assert _traces(fig, "heatmap")  # 30k points: drawn as a density layer
    small = F.curriculum_figure(x[:100], y[:100], x_label="x", y_label="y", thresholds=thr[:1])
    assert _traces(small, "scattergl")
