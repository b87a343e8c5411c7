"""Saved selections compared on the plane: pick 2-3 of the dataset's saved selections, see each outlined in its own
colour over the plane (and the data map when shown), and the server's comparison (`GET /selections/compare`):
sizes, pairwise overlap and Jaccard, task-type counts, and each metric's median [q25, q75]."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_shapes import ApiError, Selection, SelectionComparison
from frontend.callbacks import named_callback
from frontend.components import card
from frontend.context import UiContext
from frontend.errors import Outputs
from frontend.figures.overlay import COMPARE_COLORS, compare_traces
from frontend.pages.explore.map_view import map_revision, overlay_key, plane_revision
from frontend.pages.explore.query import points_for

MAX_PICKED = 3


def compare_panel() -> html.Div:
    """The card under the plane: the multi-select, a line of status, the comparison tables."""
    return card(
        "Compare saved selections",
        dcc.Store(id=ids.CMP_OVERLAY, data=None),
        dcc.Dropdown(
            id=ids.CMP_PICK,
            options=[],
            value=[],
            multi=True,
            placeholder="Pick 2 or 3 saved selections to draw them on the plane and compare them",
        ),
        html.Div(id=ids.CMP_INFO, className="hint"),
        html.Div(id=ids.CMP_TABLE, className="compare-tables"),
    )


def selection_options(selections: Sequence[Selection]) -> list[dict[str, Any]]:
    """Dropdown options, newest first as the API lists them: '#7 DIQ · top 5% (1,234)'."""
    return [
        {"label": f"#{s['id']} {s.get('name') or 'selection'} ({int(s.get('count') or 0):,})", "value": int(s["id"])}
        for s in selections
    ]


def spread(m: Mapping[str, Any] | None) -> str:
    """'0.2512 [0.2203, 0.2817]' (median [q25, q75]); an em dash when the selection has no value of that metric."""
    if not m or m.get("median") is None:
        return "—"
    return f"{m['median']:.4g} [{m.get('q25', float('nan')):.4g}, {m.get('q75', float('nan')):.4g}]"


def comparison_rows(cmp: SelectionComparison, labels: dict[str, str]) -> dict[str, Any]:
    """The comparison as plain rows: `header` (one per selection), `size`, `overlap` ([a, b, both, jaccard]),
    `task_types` ([name, counts...]), `metrics` ([label, spreads...], axes in the API's order)."""
    sels = cmp.get("selections") or []
    names = {int(s["id"]): f"#{s['id']} {s.get('name') or 'selection'}" for s in sels}
    types: list[str] = []
    for s in sels:
        types += [t for t in (s.get("by_task_type") or {}) if t not in types]
    axis_labels = {str(a.get("axis")): str(a.get("label") or a.get("axis")) for a in cmp.get("axes") or []}
    axes = list(axis_labels) or sorted({a for s in sels for a in (s.get("metrics") or {})})
    return {
        "header": [names[int(s["id"])] for s in sels],
        "size": [int(s.get("count") or 0) for s in sels],
        "overlap": [
            [names.get(int(o["a"]), str(o["a"])), names.get(int(o["b"]), str(o["b"])), int(o["both"]),
             float(o["jaccard"])]
            for o in cmp.get("overlap") or []
        ],
        "task_types": [[t, *(int((s.get("by_task_type") or {}).get(t, 0)) for s in sels)] for t in types],
        "metrics": [
            [labels.get(a, axis_labels.get(a, a)), *(spread((s.get("metrics") or {}).get(a)) for s in sels)]
            for a in axes
        ],
    }


def comparison_tables(cmp: SelectionComparison, labels: dict[str, str]) -> list[Any]:
    """The comparison as two tables: per selection (size, task types, metrics) and per pair (overlap)."""
    rows = comparison_rows(cmp, labels)
    head = html.Tr(
        [html.Th("")]
        + [
            html.Th([html.Span(className="dot", style={"background": COMPARE_COLORS[k % len(COMPARE_COLORS)]}), name])
            for k, name in enumerate(rows["header"])
        ]
    )
    body: list[Any] = [html.Tr([html.Td("samples"), *(html.Td(f"{n:,}", className="num") for n in rows["size"])])]
    body += [html.Tr([html.Td(r[0], className="sub")] + [html.Td(f"{n:,}", className="num") for n in r[1:]])
             for r in rows["task_types"]]  # fmt: skip
    body += [html.Tr([html.Td(r[0], className="sub")] + [html.Td(v, className="num") for v in r[1:]])
             for r in rows["metrics"]]  # fmt: skip
    per_selection = html.Table([html.Thead(head), html.Tbody(body)], className="compare-table", id="compare-stats")
    pairs = html.Table(
        [
            html.Thead(html.Tr([html.Th("pair"), html.Th("in both"), html.Th("Jaccard")])),
            html.Tbody(
                [
                    html.Tr(
                        [
                            html.Td(f"{a} ∩ {b}"),
                            html.Td(f"{both:,}", className="num cmp-both", **cast(Any, {"data-both": str(both)})),
                            html.Td(f"{jac:.3f}", className="num"),
                        ]
                    )
                    for a, b, both, jac in rows["overlap"]
                ]
            ),
        ],
        className="compare-table",
        id="compare-overlap",
    )
    return [pairs, per_selection]


def register(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={"options": Output(ids.CMP_PICK, "options")},
        inputs={"setup": Input(ids.EX_SETUP, "data"), "saved": Input(ids.SAVED_STORE, "data")},
    )
    def options(setup: dict[str, Any] | None, saved: list[int] | None) -> Outputs:
        """The dataset's saved selections (refreshed when this session saves one)."""
        if not setup:
            raise PreventUpdate
        try:
            return {"options": selection_options(ctx.api.selections(int(setup["ds"])))}
        except ApiError:
            return {"options": []}

    @named_callback(
        app,
        output={
            "overlay": Output(ids.CMP_OVERLAY, "data"),
            "tables": Output(ids.CMP_TABLE, "children"),
            "info": Output(ids.CMP_INFO, "children"),
        },
        inputs={
            "picked": Input(ids.CMP_PICK, "value"),
            "x": Input(ids.EX_X, "value"),
            "y": Input(ids.EX_Y, "value"),
            "show": Input(ids.EX_MAP_SHOW, "value"),
            "axes": Input(ids.EX_MAP_AXES, "data"),
        },
        state={
            "setup": State(ids.EX_SETUP, "data"),
            "color": State(ids.EX_COLOR, "value"),
            "options": State(ids.CMP_PICK, "options"),
        },
        alert="info",
        prevent_initial_call=True,
    )
    def compare(
        picked: list[int] | None,
        x: str | None,
        y: str | None,
        show: list[str] | None,
        axes: dict[str, Any] | None,
        setup: dict[str, Any] | None,
        color: str | None,
        options: list[dict[str, Any]] | None,
    ) -> Outputs:
        if not setup or not x or not y:
            raise PreventUpdate
        chosen = [int(p) for p in (picked or [])]
        if not chosen:
            return {"overlay": None, "tables": None, "info": None}
        note = ""
        if len(chosen) > MAX_PICKED:
            note = f" Only the first {MAX_PICKED} are compared."
            chosen = chosen[:MAX_PICKED]
        names = {int(o["value"]): str(o["label"]) for o in options or []}
        members = [(names.get(s, f"#{s}").split(" (")[0], ctx.api.selection_members(s)) for s in chosen]
        views = [(ids.EX_GRAPH, x, y, plane_revision(setup, x, y))]
        if show and axes:
            views.append((ids.EX_MAP, axes["x"], axes["y"], map_revision(setup, axes)))
        overlay: dict[str, Any] = {}
        for graph, gx, gy, rev in views:
            points = points_for(ctx, setup, gx, gy, color)[0]
            traces = compare_traces(points.x, points.y, points.ids, members)
            overlay[graph] = {"key": overlay_key(chosen, gx, gy), "uirevision": rev, "traces": traces}
        if len(chosen) < 2:
            return {"overlay": overlay, "tables": None, "info": "Pick one or two more to compare them." + note}
        cmp = ctx.api.compare_selections(chosen)
        return {
            "overlay": overlay,
            "tables": comparison_tables(cmp, setup.get("labels") or {}),
            "info": "Outlined on the plane, each in its colour; medians and quartiles over each whole selection."
            + note,
        }
