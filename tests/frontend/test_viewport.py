"""A plane above the UI's point budget (frontend/pages/explore/viewport.py): relayout events to views, the API's
sample flags, the server's grid as the density layer, marginals and contours, and the figure of a view."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from dash import Dash, html

from frontend import ids
from frontend.api_shapes import Points
from frontend.context import DEFAULT_POINT_BUDGET, UiContext
from frontend.pages.explore import viewport
from frontend.pages.explore.viewport import (
    Viewport,
    contour_traces,
    grid_heatmap,
    grid_layer,
    is_sampled,
    total_in_view,
    viewport_from_relayout,
)

TASKS = ["caption", "vqa"]


def make_points(n: int, total: int, seed: int = 0, lo: float = 0.0, hi: float = 10.0) -> Points:
    rng = np.random.default_rng(seed)
    return Points(
        ids=np.arange(1, n + 1, dtype=np.int32),
        x=rng.uniform(lo, hi, n).astype(np.float32),
        y=rng.uniform(lo, hi, n).astype(np.float32),
        task_type=(np.arange(n) % 2).astype(np.int8),
        task_types=list(TASKS),
        meta={"sampled": json.dumps(total > n), "total_in_view": json.dumps(total)},
    )


def make_grid(counts: np.ndarray[Any, Any], lo: float = 0.0, hi: float = 10.0) -> dict[str, Any]:
    nx, ny = counts.shape
    return {
        "x_edges": np.linspace(lo, hi, nx + 1).tolist(),
        "y_edges": np.linspace(lo, hi, ny + 1).tolist(),
        "counts": counts.tolist(),
        "total": int(counts.sum()),
    }


class FakeApi:
    """What the viewport asks of the API, answered from numbers and recorded."""

    def __init__(self, total: int, sent: int, view_total: int | None = None) -> None:
        self.total, self.sent = total, sent
        self.view_total = total // 4 if view_total is None else view_total
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def space(self, ds: int, x: str, y: str, color: str | None = None, **kw: Any) -> Points:
        self.calls.append(("space", {"color": color, **kw}))
        total = self.view_total if kw.get("x_range") is not None else self.total
        return make_points(min(self.sent, total, kw.get("max_points") or total), total)

    def density(self, ds: int, x: str, y: str, bins: int = 64, **kw: Any) -> dict[str, Any]:
        self.calls.append(("density", {"bins": bins, **kw}))
        counts = np.zeros((bins, bins), dtype=np.int64)
        counts[bins // 4 : bins // 2, bins // 4 : bins // 2] = 7
        counts[0, bins - 1] = 1  # an outlier cell: x bin 0, y bin bins - 1
        return make_grid(counts, *(kw.get("x_range") or (0.0, 10.0)))

    def summary(self, ds: int, x: str, y: str) -> dict[str, Any]:
        self.calls.append(("summary", {}))
        return {"quantiles": {"x": {"0.5": 4.5}, "y": {"0.5": float("nan")}}}

    def named(self, what: str) -> list[dict[str, Any]]:
        return [kw for name, kw in self.calls if name == what]


def make_ctx(
    total: int = 50_000, sent: int = 500, budget: int = 500, view_total: int | None = None
) -> tuple[UiContext, FakeApi]:
    api = FakeApi(total, sent, view_total)
    return UiContext(api=api, point_budget=budget), api  # type: ignore[arg-type]


SETUP = {"ds": 1, "labels": {}, "task_counts": {"caption": 10, "vqa": 10}, "task_types": TASKS}


# --- relayout events ---------------------------------------------------------------------------------------------


def test_a_zoom_gives_its_ranges_in_order() -> None:
    ev = {"xaxis.range[0]": 2.0, "xaxis.range[1]": 1.0, "yaxis.range[0]": -1, "yaxis.range[1]": 3}
    assert viewport_from_relayout(ev) == Viewport((1.0, 2.0), (-1.0, 3.0))
    assert viewport_from_relayout({"xaxis.range": [0, 5], "yaxis.range": [1, 2]}) == Viewport((0.0, 5.0), (1.0, 2.0))


def test_one_axis_keeps_the_other_and_a_reset_is_the_whole_plane() -> None:
    cur = Viewport((0.0, 1.0), (5.0, 6.0))
    assert viewport_from_relayout({"xaxis.range[0]": 2, "xaxis.range[1]": 3}, cur) == Viewport((2.0, 3.0), (5.0, 6.0))
    assert viewport_from_relayout({"xaxis.range[0]": 2, "xaxis.range[1]": 3}) == Viewport((2.0, 3.0), None)
    reset = viewport_from_relayout({"xaxis.autorange": True, "yaxis.autorange": True}, cur)
    assert reset == Viewport() and reset.whole


@pytest.mark.parametrize(
    "event",
    [
        None,
        "xaxis.range",
        {"autosize": True},
        {"dragmode": "zoom"},
        {"shapes": [{"type": "path"}]},
        {"xaxis2.range": [0, 1]},
        {"xaxis.range": [1, 1]},
        {"xaxis.range": ["a", 2]},
        {"xaxis.range[0]": float("nan"), "xaxis.range[1]": 2},
        {"xaxis.range[0]": 1},
        {"xaxis.autorange": False},
    ],
)
def test_what_is_no_change_of_view(event: Any) -> None:
    assert viewport_from_relayout(event) is None


# --- the API's sample flags --------------------------------------------------------------------------------------


def test_sample_flags_from_the_points_meta() -> None:
    big = make_points(100, 5_000)
    assert is_sampled(big) and total_in_view(big) == 5_000
    small = make_points(100, 100)
    assert not is_sampled(small) and total_in_view(small) == 100
    bare = Points(ids=big.ids, x=big.x, y=big.y, task_type=big.task_type, task_types=TASKS)
    assert not is_sampled(bare) and total_in_view(bare) == 100
    odd = Points(ids=big.ids, x=big.x, y=big.y, task_type=big.task_type, task_types=TASKS, meta={"total_in_view": "x"})
    assert total_in_view(odd) == 100


# --- the server's grid -------------------------------------------------------------------------------------------


def test_grid_layer_puts_y_on_rows() -> None:
    counts = np.zeros((4, 3), dtype=np.int64)
    counts[3, 0] = 9  # x bin 3, y bin 0
    layer, xc, yc = grid_layer(make_grid(counts))
    assert layer.shape == (3, 4) and layer[0, 3] == 9 and layer.sum() == 9
    assert xc.tolist() == pytest.approx([1.25, 3.75, 6.25, 8.75])
    assert yc.tolist() == pytest.approx([10 / 6, 5.0, 50 / 6])


@pytest.mark.parametrize(
    "grid",
    [{}, {"counts": [], "x_edges": [], "y_edges": []}, {"counts": [[1, 2]], "x_edges": [0, 1], "y_edges": [0, 1]}],
)
def test_a_grid_that_does_not_fit_is_empty(grid: dict[str, Any]) -> None:
    assert grid_layer(grid)[0].size == 0
    assert grid_heatmap(grid) is None


def test_heatmap_hides_empty_cells() -> None:
    counts = np.array([[0, 3], [5, 0]])
    heat = grid_heatmap(make_grid(counts))
    assert heat is not None
    z = np.asarray(heat.z, dtype=np.float64)
    assert np.isnan(z[0, 0]) and np.isnan(z[1, 1]) and z[1, 0] == 3 and z[0, 1] == 5
    assert heat.zmax == 5 and heat.showscale is False


def test_contours_per_type_skip_the_thin_ones() -> None:
    dense = np.zeros((20, 20), dtype=np.int64)
    dense[5:10, 5:10] = 20
    thin = np.zeros((20, 20), dtype=np.int64)
    thin[1, 1] = 3
    traces = contour_traces({"caption": make_grid(dense), "vqa": make_grid(thin)}, {"caption": "#123456"})
    assert [t.name for t in traces] == ["caption: 50% / 90% of its samples"]
    assert traces[0].line.color == "#123456"
    assert traces[0].contours.start <= traces[0].contours.end


# --- the figure of a view ----------------------------------------------------------------------------------------


def test_the_ui_context_asks_for_at_most_the_budget() -> None:
    ctx, api = make_ctx(budget=1_234)
    ctx.points.get(1, "x", "y")
    assert api.named("space") == [{"color": None, "max_points": 1_234}]
    assert UiContext(api=api).point_budget == DEFAULT_POINT_BUDGET  # type: ignore[arg-type]


def test_the_whole_plane_is_the_grid_and_the_cached_sample() -> None:
    ctx, api = make_ctx()
    out = viewport.sampled_plane(ctx, SETUP, "x", "y", "task_type", TASKS, [], [], None, Viewport())
    fig = out["figure"]
    assert len(api.named("space")) == 1  # the cached sample: no second request
    assert api.named("density") == [{"bins": viewport.GRID_BINS, "x_range": None, "y_range": None}]
    assert fig.data[0].type == "heatmap"
    scatters = [t for t in fig.data if t.type == "scattergl"]
    assert sum(len(t.x) for t in scatters) == 500
    assert sorted(t.name for t in scatters) == TASKS  # no sample counts in the legend
    assert all(t.marker.size == viewport.MARKER["size"] for t in scatters)
    bars = [t for t in fig.data if t.type == "bar"]
    grid_total = 7 * (viewport.GRID_BINS // 4) ** 2 + 1
    assert len(bars) == 2 and all(int(np.sum(b.x if b.orientation == "h" else b.y)) == grid_total for b in bars)
    caption = " ".join(str(c.children) for c in out["caption"])
    assert "50,000 points" in caption and "at most 500 points sent" in caption and "in this view" not in caption


def test_a_view_asks_again_with_its_ranges() -> None:
    ctx, api = make_ctx()
    view = Viewport((2.0, 4.0), (3.0, 5.0))
    out = viewport.sampled_plane(ctx, SETUP, "x", "y", "metric:2:loss", ["caption"], [], ["on"], None, view)
    spaces = api.named("space")
    assert spaces[-1] == {"color": "2:loss", "max_points": 500, "x_range": (2.0, 4.0), "y_range": (3.0, 5.0)}
    densities = api.named("density")
    assert {"bins": viewport.GRID_BINS, "x_range": (2.0, 4.0), "y_range": (3.0, 5.0)} in densities
    # Contours from a per-type server grid, of the kept task types only.
    assert [d.get("task_type") for d in densities if d["bins"] == viewport.CONTOUR_BINS] == ["caption"]
    fig = out["figure"]
    assert tuple(fig.layout.xaxis.range) == (2.0, 4.0) and tuple(fig.layout.yaxis.range) == (3.0, 5.0)
    assert any(t.type == "contour" for t in fig.data)
    caption = " ".join(str(c.children) for c in out["caption"])
    assert "12,500 points" in caption and "in this view" in caption and "markers filtered" in caption


def test_a_view_within_the_budget_is_drawn_whole_from_its_points() -> None:
    ctx, api = make_ctx(view_total=300)
    view = Viewport((2.0, 4.0), None)
    out = viewport.sampled_plane(ctx, SETUP, "x", "y", "task_type", TASKS, [], ["on"], None, view)
    assert not api.named("density")  # every point of the view is here: no grid, contours from the points
    fig = out["figure"]
    assert not any(t.type == "heatmap" for t in fig.data)
    assert sum(len(t.x) for t in fig.data if t.type == "scattergl") == 300
    assert any(t.type == "contour" for t in fig.data) and any(t.type == "bar" for t in fig.data)
    assert tuple(fig.layout.xaxis.range) == (2.0, 4.0) and fig.layout.yaxis.range is None
    caption = " ".join(str(c.children) for c in out["caption"])
    assert "300 points" in caption and "in this view" in caption and "sampled" not in caption


def test_coarsen_merges_whole_blocks_for_few_points() -> None:
    counts = np.ones((56, 56), dtype=np.int64)
    xc = yc = np.arange(56, dtype=np.float64) + 0.5
    same = viewport.coarsen(counts, xc, yc, 100_000)
    assert same[0].shape == (56, 56)
    merged, mx, my = viewport.coarsen(counts, xc, yc, 300)  # sqrt(300) * 0.6 ~ 10 bins: 56 / 7 = 8 or 56 / 4 = 14
    assert merged.shape in {(8, 8), (14, 14)} and merged.sum() == counts.sum()
    assert len(mx) == merged.shape[1] == len(my) and mx[0] == pytest.approx(xc[: 56 // merged.shape[1]].mean())


def test_a_stored_view_is_of_its_plane_only() -> None:
    key = viewport.view_key(SETUP, "x", "y")
    data = viewport.view_data(Viewport((1.0, 2.0), None), key)
    assert data == {"key": "1|x|y", "x_range": [1.0, 2.0], "y_range": None}
    assert json.loads(json.dumps(data)) == data
    assert viewport.stored_view(data, key) == Viewport((1.0, 2.0), None)
    assert viewport.stored_view(data, viewport.view_key(SETUP, "x", "z")) == Viewport()
    assert viewport.stored_view(None, key) == Viewport()
    assert viewport.stored_view({"key": key, "x_range": [3, 3]}, key) == Viewport()


def test_the_reference_median_is_the_servers() -> None:
    ctx, _ = make_ctx()
    assert viewport.plane_reference(ctx, SETUP, "x", "y") == {"x": {"median": 4.5}}  # a NaN median is left out


def _rezoom(app: Dash, relayout: Any, current: Any = None) -> Any:
    names = ("x", "y", "color", "tasks", "meta_values", "contours", "setup", "region", "current")
    props = {
        ids.EX_X: ("value", "x"), ids.EX_Y: ("value", "y"), ids.EX_COLOR: ("value", "task_type"),
        ids.EX_TASKS: ("value", TASKS), ids.EX_META_VALUES: ("value", []), ids.EX_CONTOURS: ("value", []),
        ids.EX_SETUP: ("data", SETUP), ids.EX_REGION: ("data", None), ids.EX_VIEW: ("data", current),
    }  # fmt: skip
    assert len(names) == len(props)
    (output,) = app.callback_map  # the one callback; its outputs carry allow_duplicate's hash suffix
    outputs = [
        dict(zip(("id", "property"), part.rsplit(".", 1), strict=True)) for part in output.strip(".").split("...")
    ]
    assert [o["id"] for o in outputs] == [ids.EX_GRAPH, ids.EX_PLOT_INFO, ids.EX_ALERT, ids.EX_VIEW]
    body = {
        "output": output,
        "outputs": outputs,
        "inputs": [{"id": ids.EX_GRAPH, "property": "relayoutData", "value": relayout}],
        "state": [{"id": k, "property": p, "value": v} for k, (p, v) in props.items()],
        "changedPropIds": [f"{ids.EX_GRAPH}.relayoutData"],
    }
    return app.server.test_client().post("/_dash-update-component", json=body)


def _app(ctx: UiContext) -> Dash:
    app = Dash(__name__, suppress_callback_exceptions=True)
    app.layout = html.Div()
    app.server.testing = True
    viewport.register(app, ctx)
    return app


def test_a_zoom_of_a_big_plane_redraws_it_and_a_small_one_is_left_to_plotly() -> None:
    ctx, api = make_ctx()
    zoom = {"xaxis.range[0]": 1, "xaxis.range[1]": 2, "yaxis.range[0]": 1, "yaxis.range[1]": 2}
    resp = _rezoom(_app(ctx), zoom)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert api.named("space")[-1]["x_range"] == (1.0, 2.0)
    stored = resp.get_json()["response"][ids.EX_VIEW]["data"]
    assert stored == {"key": "1|x|y", "x_range": [1.0, 2.0], "y_range": [1.0, 2.0]}
    # A pan of x alone keeps the stored y range.
    resp = _rezoom(_app(ctx), {"xaxis.range[0]": 3, "xaxis.range[1]": 4}, stored)
    assert resp.get_json()["response"][ids.EX_VIEW]["data"]["y_range"] == [1.0, 2.0]
    assert api.named("space")[-1]["y_range"] == (1.0, 2.0)
    assert _rezoom(_app(ctx), {"autosize": True}).status_code == 204
    small, small_api = make_ctx(total=300, sent=300)
    assert _rezoom(_app(small), zoom).status_code == 204
    assert len(small_api.named("space")) == 1 and not small_api.named("density")
