"""Curriculum: the paper's staged builder drawn on the plane, or saved selections as stages; zip export."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from dash import Dash, Input, Output, State, callback_context, dcc, html, no_update
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_client import ApiClient, ApiError, Dataset
from frontend.components import alert, card, fmt_num, number_input
from frontend.context import UiContext
from frontend.errors import guarded
from frontend.figures import STAGE_COLORS, curriculum_figure, empty_figure
from frontend.pages.explore import (
    GRAPH_CONFIG,
    _data,
    _no_data,
    axis_choices,
    default_axes,
    saved_selections,
    short_label,
)


def round_sig(v: float, sig: int = 3) -> float:
    if v == 0 or not math.isfinite(v):
        return 0.0 if not math.isfinite(v) else v
    return round(v, sig - 1 - math.floor(math.log10(abs(v))))


def builder_defaults(x: np.ndarray, y: np.ndarray, stages: int = 3) -> dict[str, float]:
    """Stage thresholds from the 20th to the 60th percentile of each axis: a visible narrowing."""
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return {"x_min": 0.0, "y_min": 0.0, "dx": 0.0, "dy": 0.0}
    qx = np.quantile(x[ok].astype(np.float64), [0.2, 0.6])
    qy = np.quantile(y[ok].astype(np.float64), [0.2, 0.6])
    k = max(stages - 1, 1)
    return {
        "x_min": round_sig(float(qx[0])),
        "y_min": round_sig(float(qy[0])),
        "dx": round_sig(float(qx[1] - qx[0]) / k),
        "dy": round_sig(float(qy[1] - qy[0]) / k),
    }


def _num(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def builder_body(stages: Any, x_min: Any, y_min: Any, dx: Any, dy: Any, per_stage: Any, seed: Any) -> dict[str, Any]:
    """The `builder` of a curriculum request from the form; ValueError names a bad field."""
    k = _num(stages)
    if k is None or k != int(k) or not 1 <= k <= 10:
        raise ValueError("stages: give a whole number from 1 to 10")
    n = _num(per_stage)
    if n is None or n != int(n) or n < 1:
        raise ValueError("per stage: give a whole number of samples, at least 1")
    s = _num(seed)
    out: dict[str, Any] = {
        "stages": int(k),
        "dx": _num(dx) or 0.0,
        "dy": _num(dy) or 0.0,
        "per_stage": int(n),
        "seed": int(s) if s is not None and s >= 0 else 0,
    }
    if _num(x_min) is not None:
        out["x_min"] = _num(x_min)
    if _num(y_min) is not None:
        out["y_min"] = _num(y_min)
    return out


def layout(ctx: UiContext, ds: int | None, all_ds: list[Dataset]) -> Any:
    if ds is None:
        return _no_data("No dataset yet", "Ingest and score a dataset first.", "/datasets", "Go to Datasets")
    dataset = next(d for d in all_ds if int(d["id"]) == ds)
    options, labels, shortcut = axis_choices(ctx.api.axes(ds))
    if not options:
        return _no_data(
            f"{dataset['name']}: nothing scored yet",
            "A curriculum needs two finished metrics.",
            f"/datasets?ds={ds}",
            "Start a scorer run",
        )
    x, y = default_axes(options, shortcut)
    n = int(dataset.get("n_samples", 0))
    per_stage = max(1, min(2400, n // 10 or 1))
    defaults = {"x_min": None, "y_min": None, "dx": None, "dy": None}
    if x and y:
        try:
            pts = ctx.points.get(ds, x, y)
            defaults = builder_defaults(pts.x, pts.y)  # type: ignore[assignment]
        except ApiError:
            pass
    setup = {"ds": ds, "labels": labels, "n": n}
    builder = card(
        "The paper's builder",
        html.P(
            "Stage k keeps x ≥ x_min + k·dx and y ≥ y_min + k·dy, then draws per-stage samples at random "
            "(stages disjoint): each stage narrows toward the high-loss, high-CLIP corner.",
            className="hint",
        ),
        html.Label("x", className="field-label"),
        dcc.Dropdown(id=ids.CU_X, options=options, value=x, clearable=False),
        html.Label("y", className="field-label"),
        dcc.Dropdown(id=ids.CU_Y, options=options, value=y, clearable=False),
        html.Div(
            [
                html.Div(
                    [
                        html.Label("stages", className="field-label"),
                        number_input(ids.CU_STAGES, 3, step=1, min=1, max=10),
                    ]
                ),
                html.Div(
                    [
                        html.Label("per stage", className="field-label"),
                        number_input(ids.CU_PER_STAGE, per_stage, step=1, min=1),
                    ]
                ),
                html.Div(
                    [
                        html.Label("x_min", className="field-label"),
                        number_input(ids.CU_X_MIN, defaults["x_min"], placeholder="min"),
                    ]
                ),
                html.Div(
                    [
                        html.Label("y_min", className="field-label"),
                        number_input(ids.CU_Y_MIN, defaults["y_min"], placeholder="min"),
                    ]
                ),
                html.Div([html.Label("dx", className="field-label"), number_input(ids.CU_DX, defaults["dx"])]),
                html.Div([html.Label("dy", className="field-label"), number_input(ids.CU_DY, defaults["dy"])]),
                html.Div([html.Label("seed", className="field-label"), number_input(ids.CU_SEED, 0, step=1, min=0)]),
                html.Div(
                    [
                        html.Label("name", className="field-label"),
                        dcc.Input(id=ids.CU_NAME, className="input", placeholder="optional", maxLength=200),
                    ]
                ),
            ],
            className="form-grid",
        ),
        html.Button("Build curriculum", id=ids.CU_BUILD, className="btn btn-primary", n_clicks=0),
    )
    from_selections = card(
        "Or: saved selections as stages",
        html.P("Pick saved selections in stage order (save them on the Explore page).", className="hint"),
        dcc.Dropdown(id=ids.CU_SELECTIONS, options=[], value=[], multi=True, placeholder="selection for stage 1, 2, …"),
        html.Button("Build from selections", id=ids.CU_BUILD_SEL, className="btn", n_clicks=0),
    )
    return html.Div(
        [
            dcc.Store(id=ids.CU_SETUP, data=setup),
            html.Div(
                [
                    html.Div([builder, from_selections], className="controls wide"),
                    html.Div(
                        [
                            card(
                                None,
                                dcc.Graph(
                                    id=ids.CU_GRAPH,
                                    figure=empty_figure("Loading…"),
                                    config=GRAPH_CONFIG,
                                    style={"height": "560px"},
                                ),
                                html.Div(id=ids.CU_SIZES, className="stage-sizes"),
                                html.Div(id=ids.CU_ALERT),
                            ),
                            dcc.Loading(html.Div(id=ids.CU_RESULT), type="dot", color="#3B82C4"),
                        ],
                        className="plot-col",
                    ),
                ],
                className="cur-grid",
            ),
        ],
        className="curriculum",
    )


def _stage_body(x: str, y: str, tx: float, ty: float) -> dict[str, Any]:
    return {"x": x, "y": y, "region": {"type": "box", "x": [tx, None], "y": [ty, None]}}


def _result(cur: dict[str, Any]) -> Any:
    stages = cur.get("stages") or []
    from_selections = any(s.get("selection_id") for s in stages)
    rows = []
    for k, s in enumerate(stages):
        color = STAGE_COLORS[min(k, len(STAGE_COLORS) - 1)]
        rows.append(
            html.Tr(
                [
                    html.Td(
                        html.Span(
                            str(s.get("name") or f"stage {k + 1}"), className="stage-pill", style={"background": color}
                        )
                    ),
                    html.Td(f"{int(s.get('count', 0)):,}", className="num"),
                    html.Td(f"#{s['selection_id']}", className="muted") if from_selections else None,
                    html.Td(str((s.get("recipe") or {}).get("rule") or ""), className="muted")
                    if not from_selections
                    else None,
                ]
            )
        )
    cid = int(cur["id"])
    return card(
        f"Curriculum #{cid}" + (f" · {cur['name']}" if cur.get("name") else ""),
        html.Table(
            [
                html.Thead(
                    html.Tr(
                        [
                            html.Th("stage"),
                            html.Th("samples", className="num"),
                            html.Th("selection" if from_selections else "rule"),
                        ]
                    )
                ),
                html.Tbody(rows),
            ],
            className="table compact",
        ),
        html.A(
            "Download zip (LLaVA JSON per stage + JSONL, Parquet, ids, manifest.json)",
            href=ApiClient.curriculum_export_path(cid),
            className="btn btn-primary",
            download="",
            id="cur-download",
        ),
        class_name="cur-result",
    )


def register(app: Dash, ctx: UiContext) -> None:
    @app.callback(
        Output(ids.CU_X_MIN, "value"),
        Output(ids.CU_Y_MIN, "value"),
        Output(ids.CU_DX, "value"),
        Output(ids.CU_DY, "value"),
        Input(ids.CU_X, "value"),
        Input(ids.CU_Y, "value"),
        State(ids.CU_STAGES, "value"),
        State(ids.CU_SETUP, "data"),
        prevent_initial_call=True,
    )
    def defaults(x: str, y: str, stages: Any, setup: dict[str, Any]) -> tuple[Any, ...]:
        if not setup or not x or not y:
            raise PreventUpdate
        try:
            pts = ctx.points.get(int(setup["ds"]), x, y)
        except ApiError:
            return no_update, no_update, no_update, no_update
        d = builder_defaults(pts.x, pts.y, int(_num(stages) or 3))
        return d["x_min"], d["y_min"], d["dx"], d["dy"]

    @app.callback(
        Output(ids.CU_SELECTIONS, "options"),
        Input(ids.SAVED_STORE, "data"),
        State(ids.CU_SETUP, "data"),
    )
    def selection_options(session_ids: list[int] | None, setup: dict[str, Any]) -> Any:
        if not setup:
            raise PreventUpdate
        try:
            saved = saved_selections(ctx, int(setup["ds"]), session_ids)
        except ApiError:
            return []
        return [
            {"label": f"#{s['id']} {s.get('name') or ''} · {int(s.get('count', 0)):,}", "value": int(s["id"])}
            for s in saved
        ]

    @app.callback(
        Output(ids.CU_GRAPH, "figure"),
        Output(ids.CU_SIZES, "children"),
        Output(ids.CU_ALERT, "children"),
        Input(ids.CU_X, "value"),
        Input(ids.CU_Y, "value"),
        Input(ids.CU_STAGES, "value"),
        Input(ids.CU_X_MIN, "value"),
        Input(ids.CU_Y_MIN, "value"),
        Input(ids.CU_DX, "value"),
        Input(ids.CU_DY, "value"),
        Input(ids.CU_PER_STAGE, "value"),
        Input(ids.CU_SEED, "value"),
        State(ids.CU_SETUP, "data"),
        State(ids.TOKEN, "value"),
    )
    @guarded(3, 2)
    def preview(
        x: str,
        y: str,
        stages: Any,
        x_min: Any,
        y_min: Any,
        dx: Any,
        dy: Any,
        per_stage: Any,
        seed: Any,
        setup: dict[str, Any],
        token: str | None,
    ) -> tuple[Any, ...]:
        """The stages' regions on the plane and their sizes, as the server would build them now."""
        if not setup or not x or not y:
            raise PreventUpdate
        ds = int(setup["ds"])
        labels = setup.get("labels") or {}
        try:
            builder = builder_body(stages, x_min, y_min, dx, dy, per_stage, seed)
        except ValueError as exc:
            return no_update, None, alert(str(exc))
        body = {"x": x, "y": y, "builder": builder}
        pts = ctx.points.get(ds, x, y)
        planned = ctx.api.preview_curriculum(ds, body, token=token or None).get("stages") or []
        n_per = int(builder["per_stage"])
        thresholds: list[tuple[float, float]] = []
        sizes: list[str] = []
        names: list[str] = []
        rows = []
        for i, st in enumerate(planned):
            r = st.get("recipe") or {}
            tx, ty = float(r.get("x_min", 0.0)), float(r.get("y_min", 0.0))
            thresholds.append((tx, ty))
            pool = int(r.get("available", st.get("count", 0)))
            count = int(st.get("count", 0))
            sizes.append(f"{count:,}")
            names.append(str(st.get("name") or f"stage {i + 1}"))
            short = count < n_per
            rows.append(
                html.Tr(
                    [
                        html.Td(
                            html.Span(
                                str(st.get("name") or f"stage {i + 1}"),
                                className="stage-pill",
                                style={"background": STAGE_COLORS[min(i, len(STAGE_COLORS) - 1)]},
                            )
                        ),
                        html.Td(f"≥ {fmt_num(tx)}"),
                        html.Td(f"≥ {fmt_num(ty)}"),
                        html.Td(f"{pool:,}", className="num"),
                        html.Td(
                            f"{count:,}" + (" (short)" if short else ""),
                            className="num warn" if short else "num",
                            **_data("count", count),
                        ),
                    ],
                    className="stage-row",
                )
            )
        fig = curriculum_figure(
            pts.x,
            pts.y,
            x_label=labels.get(x, x),
            y_label=labels.get(y, y),
            thresholds=thresholds,
            sizes=sizes,
            names=names,
            uirevision=f"{ds}|{x}|{y}",
        )
        table = html.Table(
            [
                html.Thead(
                    html.Tr(
                        [
                            html.Th("stage"),
                            html.Th(short_label(labels.get(x, x))),
                            html.Th(short_label(labels.get(y, y))),
                            html.Th("in region", className="num"),
                            html.Th("drawn", className="num"),
                        ]
                    )
                ),
                html.Tbody(rows),
            ],
            className="table compact",
        )
        note = html.P(
            "Sizes come from the server over every point. Stages are disjoint: a later stage draws from "
            "what earlier stages left in its region.",
            className="hint",
        )
        return fig, [table, note], None

    @app.callback(
        Output(ids.CU_RESULT, "children"),
        Input(ids.CU_BUILD, "n_clicks"),
        Input(ids.CU_BUILD_SEL, "n_clicks"),
        State(ids.CU_X, "value"),
        State(ids.CU_Y, "value"),
        State(ids.CU_STAGES, "value"),
        State(ids.CU_X_MIN, "value"),
        State(ids.CU_Y_MIN, "value"),
        State(ids.CU_DX, "value"),
        State(ids.CU_DY, "value"),
        State(ids.CU_PER_STAGE, "value"),
        State(ids.CU_SEED, "value"),
        State(ids.CU_NAME, "value"),
        State(ids.CU_SELECTIONS, "value"),
        State(ids.CU_SETUP, "data"),
        State(ids.TOKEN, "value"),
        prevent_initial_call=True,
    )
    @guarded(1, 0)
    def build(
        _b: int,
        _s: int,
        x: str,
        y: str,
        stages: Any,
        x_min: Any,
        y_min: Any,
        dx: Any,
        dy: Any,
        per_stage: Any,
        seed: Any,
        name: str | None,
        selections: list[int] | None,
        setup: dict[str, Any],
        token: str | None,
    ) -> Any:
        if not setup:
            raise PreventUpdate
        ds = int(setup["ds"])
        body: dict[str, Any] = {"x": x, "y": y}
        if name and name.strip():
            body["name"] = name.strip()
        if callback_context.triggered_id == ids.CU_BUILD_SEL:
            if not selections:
                return alert("Pick at least one saved selection.", "info")
            body["stages"] = [int(s) for s in selections]
        else:
            try:
                body["builder"] = builder_body(stages, x_min, y_min, dx, dy, per_stage, seed)
            except ValueError as exc:
                return alert(str(exc))
        cur = ctx.api.create_curriculum(ds, body, token=token or None)
        if not cur.get("stages"):
            cur = ctx.api.curriculum(int(cur["id"]))
        return _result(cur)
