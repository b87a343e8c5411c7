"""Selections laid over a view (frontend.figures.overlay): member markers placed by id, budgeted, in JSON-ready dicts;
clusters as categories; the data map's figure naming its axes for the browser's lasso."""

from __future__ import annotations

import json

import numpy as np

from frontend.figures.overlay import (
    COMPARE_COLORS,
    cluster_categories,
    compare_traces,
    map_figure,
    member_positions,
    overlay_trace,
)


def test_member_positions_follow_ids_not_order() -> None:
    ids = np.array([40, 10, 30, 20, 50], dtype=np.int32)
    assert member_positions(ids, [20, 40, 99]).tolist() == [0, 3]
    assert member_positions(ids, np.array([50, 10, 10])).tolist() == [1, 4]
    assert member_positions(ids, []).tolist() == []
    assert member_positions([], [1, 2]).tolist() == []


def test_overlay_trace_places_members_and_skips_non_finite() -> None:
    x = np.array([0.0, 1.0, np.nan, 3.0], dtype=np.float32)
    y = np.array([5.0, 6.0, 7.0, 8.0], dtype=np.float32)
    ids = np.array([7, 8, 9, 10], dtype=np.int32)
    trace, total = overlay_trace(x, y, ids, [8, 9, 10, 11], name="lasso", color="#000", group="link")
    assert total == 2  # 9 has no finite x, 11 is not a point here
    assert trace["customdata"] == [8, 10] and trace["x"] == [1.0, 3.0] and trace["y"] == [6.0, 8.0]
    assert trace["meta"] == {"qspace": "link"} and trace["type"] == "scattergl"
    assert trace["name"] == "lasso (2)" and trace["marker"]["color"] == "#000"
    json.dumps(trace)  # plain JSON: it travels through a store to the browser as it is


def test_overlay_budget_draws_a_seeded_subset() -> None:
    n = 1000
    x = np.arange(n, dtype=np.float32)
    ids = np.arange(100, 100 + n, dtype=np.int32)
    members = ids[::2]
    a, total = overlay_trace(x, x, ids, members, name="s", color="#111", group="link", budget=100)
    b, _ = overlay_trace(x, x, ids, members, name="s", color="#111", group="link", budget=100)
    assert total == 500 and len(a["customdata"]) == 100 and a["customdata"] == b["customdata"]
    assert set(a["customdata"]) <= set(members.tolist()) and a["customdata"] == sorted(a["customdata"])
    assert "100 drawn" in a["name"] and "500" in a["name"]


def test_compare_traces_one_outline_per_selection_in_its_colour() -> None:
    x = np.linspace(0, 1, 6, dtype=np.float32)
    ids = np.arange(1, 7, dtype=np.int32)
    traces = compare_traces(x, x, ids, [("#1 a", [1, 2, 3]), ("#2 b", [3, 4]), ("#3 c", [6])])
    assert [t["customdata"] for t in traces] == [[1, 2, 3], [3, 4], [6]]
    assert [t["marker"]["color"] for t in traces] == list(COMPARE_COLORS)
    assert all(t["marker"]["symbol"] == "circle-open" and t["meta"] == {"qspace": "compare"} for t in traces)


def test_cluster_categories() -> None:
    codes, names = cluster_categories(np.array([0.0, 2.0, np.nan, 1.0, 2.0]), ["cats", "", "dogs"])
    assert codes.tolist() == [0, 2, -1, 1, 2] and codes.dtype == np.int16
    assert names == ["0 · cats", "1", "2 · dogs"]
    codes, names = cluster_categories(np.array([np.nan]))
    assert codes.tolist() == [-1] and names == []


def test_map_figure_names_its_axes_and_draws_no_marginals() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=300).astype(np.float32), rng.normal(size=300).astype(np.float32)
    ids = np.arange(300, dtype=np.int32)
    codes = (np.arange(300) % 3).astype(np.int16)
    fig, stats = map_figure(
        x, y, ids, axes={"x": "5:map_x", "y": "5:map_y"}, uirevision="map|1", codes=codes, categories=["0", "1", "2"]
    )
    assert fig.layout.meta == {"axes": {"x": "5:map_x", "y": "5:map_y"}, "view": "map"}
    assert fig.layout.uirevision == "map|1" and fig.layout.dragmode == "drawclosedpath"
    assert [t.type for t in fig.data] == ["scattergl"] * 3  # one per cluster, no marginal bars
    assert sorted(int(i) for t in fig.data for i in t.customdata) == list(range(300))
    assert tuple(fig.layout.xaxis.domain) == (0.0, 1.0) and stats.total == 300
