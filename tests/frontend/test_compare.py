"""Explore's comparison of saved selections (frontend.pages.explore.compare): options, rows and tables from the
API's comparison, exactly as the API gave them."""

from __future__ import annotations

from typing import Any

from dash import html

from frontend.api_shapes import SelectionComparison
from frontend.pages.explore.compare import comparison_rows, comparison_tables, selection_options, spread

CMP: SelectionComparison = {
    "dataset_id": 1,
    "selections": [
        {"id": 4, "name": "DIQ", "count": 1200, "by_task_type": {"conv": 1000, "detail": 200},
         "metrics": {"2:loss_sum": {"median": 12.5, "q25": 10.0, "q75": 15.25, "n": 1200},
                     "1:similarity": {"median": None, "q25": None, "q75": None, "n": 0}}},
        {"id": 7, "name": None, "count": 300, "by_task_type": {"referring": 300},
         "metrics": {"2:loss_sum": {"median": 3.0, "q25": 2.0, "q75": 4.0, "n": 300}}},
    ],
    "overlap": [{"a": 4, "b": 7, "both": 120, "jaccard": 120 / 1380}],
    "axes": [{"axis": "1:similarity", "label": "clip similarity (run 1)"},
             {"axis": "2:loss_sum", "label": "mllm_loss loss_sum (run 2)"}],
}  # fmt: skip


def test_selection_options() -> None:
    opts = selection_options([{"id": 9, "name": "top", "count": 1234}, {"id": 3, "count": 5}])
    assert opts == [{"label": "#9 top (1,234)", "value": 9}, {"label": "#3 selection (5)", "value": 3}]


def test_spread() -> None:
    assert spread({"median": 0.25, "q25": 0.2, "q75": 0.3125}) == "0.25 [0.2, 0.3125]"
    assert spread({"median": None}) == "—" and spread(None) == "—"


def test_comparison_rows_are_the_apis_numbers() -> None:
    rows = comparison_rows(CMP, {"2:loss_sum": "loss"})
    assert rows["header"] == ["#4 DIQ", "#7 selection"]
    assert rows["size"] == [1200, 300]
    assert rows["overlap"] == [["#4 DIQ", "#7 selection", 120, 120 / 1380]]
    assert rows["task_types"] == [["conv", 1000, 0], ["detail", 200, 0], ["referring", 0, 300]]
    assert rows["metrics"] == [
        ["clip similarity (run 1)", "—", "—"],  # the API's label; a selection without the metric: a dash
        ["loss", "12.5 [10, 15.25]", "3 [2, 4]"],  # the page's own label wins
    ]


def _text(node: Any) -> str:
    if isinstance(node, str | int | float):
        return str(node)
    if isinstance(node, list | tuple):
        return " ".join(_text(n) for n in node)
    children = getattr(node, "children", None)
    return "" if children is None else _text(children)


def test_comparison_tables() -> None:
    pairs, stats = comparison_tables(CMP, {})
    assert isinstance(pairs, html.Table) and pairs.to_plotly_json()["props"]["id"] == "compare-overlap"
    cells = [c for row in pairs.children[1].children for c in row.children]
    both = [c for c in cells if "cmp-both" in (getattr(c, "className", None) or "")]
    assert len(both) == 1 and getattr(both[0], "data-both") == "120" and both[0].children == "120"
    assert "0.087" in _text(pairs)
    text = _text(stats)
    assert "1,200" in text and "referring" in text and "12.5 [10, 15.25]" in text
