"""The linked data map (frontend.pages.explore.map_view) and the colours both views share (explore.colours):
which run is the map, a map lasso's recipe, clusters coloured as categories."""

from __future__ import annotations

from typing import Any

import numpy as np

from frontend.api_shapes import ApiError, Points
from frontend.pages.explore.colours import cluster_labels, cluster_run, colour_kwargs
from frontend.pages.explore.map_view import map_revision, overlay_key, plane_revision, projection_axes
from frontend.pages.explore.query import selection_body


def test_projection_axes_pick_the_newest_complete_run() -> None:
    opts = [{"value": v, "label": v} for v in ("1:similarity", "4:map_x", "4:map_y", "9:map_x", "2:loss_sum")]
    assert projection_axes(opts) == {"x": "4:map_x", "y": "4:map_y", "run": 4}  # run 9 has no map_y
    opts.append({"value": "9:map_y", "label": ""})
    assert projection_axes(opts) == {"x": "9:map_x", "y": "9:map_y", "run": 9}
    assert projection_axes([{"value": "1:similarity", "label": ""}]) is None


def test_a_map_region_resolves_on_the_maps_axes() -> None:
    setup = {"task_types": ["a", "b"], "meta_fields": {}}
    poly = {"type": "polygon", "points": [[0, 0], [1, 0], [0, 1]]}
    drawn = {"region": poly, "source": "draw", "view": "map", "axes": {"x": "4:map_x", "y": "4:map_y"}}
    body = selection_body(setup, "2:loss_sum", "1:similarity", drawn, ["a"], "task_type", None)
    assert body == {"x": "4:map_x", "y": "4:map_y", "region": poly, "task_types": ["a"]}
    plane = selection_body(setup, "2:loss_sum", "1:similarity", {"region": poly}, ["a", "b"], None, None)
    assert plane == {"x": "2:loss_sum", "y": "1:similarity", "region": poly}


def test_revisions_and_keys() -> None:
    setup = {"ds": 3}
    assert plane_revision(setup, "2:loss_sum", "1:similarity") == "3|2:loss_sum|1:similarity"
    assert map_revision(setup, {"x": "4:map_x", "y": "4:map_y"}) == "map|3|4:map_x|4:map_y"
    assert overlay_key({"a": 1}, "x") == overlay_key({"a": 1}, "x") != overlay_key({"a": 2}, "x")


def points(color: Any = None, categories: list[str] | None = None) -> Points:
    return Points(
        ids=np.array([1, 2, 3, 4], dtype=np.int32),
        x=np.zeros(4, dtype=np.float32),
        y=np.zeros(4, dtype=np.float32),
        task_type=np.array([0, 1, 0, 1], dtype=np.int8),
        task_types=["a", "b"],
        color=color,
        color_categories=categories,
    )


def test_colour_kwargs() -> None:
    keep = np.array([True, True, False, True])
    sel = lambda a: a[keep]  # noqa: E731
    kw = colour_kwargs(points(), "task_type", {}, sel)
    assert kw["codes"].tolist() == [0, 1, 1] and kw["categories"] == ["a", "b"]
    assert colour_kwargs(points(), "none", {}, sel) == {}
    meta = colour_kwargs(points(np.array([1, 0, 1, 0], dtype=np.int16), ["x", "y"]), "meta:defect", {}, sel)
    assert meta["codes"].tolist() == [1, 0, 0] and meta["categories"] == ["x", "y"]
    values = np.array([0.5, 1.5, 2.5, np.nan], dtype=np.float32)
    kw = colour_kwargs(points(values), "metric:2:loss_sum", {"2:loss_sum": "loss"}, sel)
    assert kw["value_label"] == "loss" and kw["values"].tolist()[:2] == [0.5, 1.5]
    clusters = np.array([0.0, 2.0, 1.0, np.nan], dtype=np.float32)
    kw = colour_kwargs(points(clusters), "metric:8:cluster", {}, sel, ["red", "blue", ""])
    assert kw["codes"].tolist() == [0, 2, -1] and kw["categories"] == ["0 · red", "1 · blue", "2"]
    many = np.arange(4, dtype=np.float32) * 10  # 31 clusters: too many categories, a colour scale then
    assert "values" in colour_kwargs(points(many), "metric:8:cluster", {}, sel)


def test_cluster_run_and_labels_once_per_plane() -> None:
    assert cluster_run("metric:12:cluster") == 12
    assert cluster_run("metric:12:map_x") is None and cluster_run("task_type") is None and cluster_run(None) is None

    class Api:
        calls = 0

        def cluster_summary(self, run: int) -> dict[str, Any]:
            Api.calls += 1
            if run == 99:
                raise ApiError("run 99 is not a clusters run", status=422)
            return {"clusters": [{"id": 0, "label": "cats"}, {"id": 1, "label": None}]}

    class Ctx:
        api = Api()

    scratch: dict[str, Any] = {}
    assert cluster_labels(Ctx(), 5, scratch) == ["cats", ""]  # type: ignore[arg-type]
    assert cluster_labels(Ctx(), 5, scratch) == ["cats", ""]  # type: ignore[arg-type]
    assert Api.calls == 1
    assert cluster_labels(Ctx(), 99, scratch) == []  # type: ignore[arg-type]
