"""Curriculum's callbacks: the builder's defaults for new axes, the saved selections on offer, the live
preview of the stages, building. Every output, input and state by name (frontend.callbacks)."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, callback_context
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_shapes import ApiError
from frontend.callbacks import named_callback
from frontend.components import alert
from frontend.context import UiContext
from frontend.errors import Outputs
from frontend.figures import curriculum_figure
from frontend.pages.curriculum import panels
from frontend.pages.curriculum.builder import as_number, builder_body, builder_defaults
from frontend.pages.saved import saved_selections

# The builder's fields, by the name builder_body takes them.
BUILDER_FIELDS = {
    "stages": ids.CU_STAGES,
    "x_min": ids.CU_X_MIN,
    "y_min": ids.CU_Y_MIN,
    "dx": ids.CU_DX,
    "dy": ids.CU_DY,
    "per_stage": ids.CU_PER_STAGE,
    "seed": ids.CU_SEED,
}


def register(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={
            "x_min": Output(ids.CU_X_MIN, "value"),
            "y_min": Output(ids.CU_Y_MIN, "value"),
            "dx": Output(ids.CU_DX, "value"),
            "dy": Output(ids.CU_DY, "value"),
        },
        inputs={"x": Input(ids.CU_X, "value"), "y": Input(ids.CU_Y, "value")},
        state={"stages": State(ids.CU_STAGES, "value"), "setup": State(ids.CU_SETUP, "data")},
        prevent_initial_call=True,
    )
    def defaults(x: str, y: str, stages: Any, setup: dict[str, Any]) -> Outputs:
        if not setup or not x or not y:
            raise PreventUpdate
        try:
            pts = ctx.points.get(int(setup["ds"]), x, y)
        except ApiError:
            return {}
        d = builder_defaults(pts.x, pts.y, int(as_number(stages) or 3))
        return {"x_min": d["x_min"], "y_min": d["y_min"], "dx": d["dx"], "dy": d["dy"]}

    @named_callback(
        app,
        output={"options": Output(ids.CU_SELECTIONS, "options")},
        inputs={"session_ids": Input(ids.SAVED_STORE, "data")},
        state={"setup": State(ids.CU_SETUP, "data")},
    )
    def selection_options(session_ids: list[int] | None, setup: dict[str, Any]) -> Outputs:
        if not setup:
            raise PreventUpdate
        try:
            saved = saved_selections(ctx, int(setup["ds"]), session_ids)
        except ApiError:
            return {"options": []}
        return {
            "options": [
                {"label": f"#{s['id']} {s.get('name') or ''} · {int(s.get('count', 0)):,}", "value": int(s["id"])}
                for s in saved
            ]
        }

    @named_callback(
        app,
        output={
            "figure": Output(ids.CU_GRAPH, "figure"),
            "sizes": Output(ids.CU_SIZES, "children"),
            "alert": Output(ids.CU_ALERT, "children"),
        },
        inputs={
            "x": Input(ids.CU_X, "value"),
            "y": Input(ids.CU_Y, "value"),
            **{name: Input(cid, "value") for name, cid in BUILDER_FIELDS.items()},
        },
        state={"setup": State(ids.CU_SETUP, "data"), "token": State(ids.TOKEN, "value")},
        alert="alert",
    )
    def preview(x: str, y: str, setup: dict[str, Any], token: str | None, **fields: Any) -> Outputs:
        """The stages' regions on the plane and their sizes, as the server would build them now."""
        if not setup or not x or not y:
            raise PreventUpdate
        ds = int(setup["ds"])
        labels = setup.get("labels") or {}
        try:
            builder = builder_body(**fields)
        except ValueError as exc:
            return {"sizes": None, "alert": alert(str(exc))}
        body = {"x": x, "y": y, "builder": builder}
        pts = ctx.points.get(ds, x, y)
        planned = ctx.api.preview_curriculum(ds, body, token=token or None).get("stages") or []
        thresholds, sizes, names = panels.stage_marks(planned)
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
        table = panels.plan_table(planned, int(builder["per_stage"]), labels.get(x, x), labels.get(y, y))
        return {"figure": fig, "sizes": table, "alert": None}

    @named_callback(
        app,
        output={"result": Output(ids.CU_RESULT, "children"), "built": Output(ids.CURRICULA_STORE, "data")},
        inputs={
            "build_clicks": Input(ids.CU_BUILD, "n_clicks"),
            "from_selections_clicks": Input(ids.CU_BUILD_SEL, "n_clicks"),
        },
        state={
            "x": State(ids.CU_X, "value"),
            "y": State(ids.CU_Y, "value"),
            **{name: State(cid, "value") for name, cid in BUILDER_FIELDS.items()},
            "name": State(ids.CU_NAME, "value"),
            "selections": State(ids.CU_SELECTIONS, "value"),
            "setup": State(ids.CU_SETUP, "data"),
            "token": State(ids.TOKEN, "value"),
            "built_before": State(ids.CURRICULA_STORE, "data"),
        },
        alert="result",
        prevent_initial_call=True,
    )
    def build(
        build_clicks: int,
        from_selections_clicks: int,
        x: str,
        y: str,
        name: str | None,
        selections: list[int] | None,
        setup: dict[str, Any],
        token: str | None,
        built_before: list[int] | None,
        **fields: Any,
    ) -> Outputs:
        # The session's curricula store lives in the shell, so Dash also calls this when the page arrives (before
        # any click): build nothing then.
        if not setup or not (build_clicks or from_selections_clicks):
            raise PreventUpdate
        ds = int(setup["ds"])
        body: dict[str, Any] = {"x": x, "y": y}
        if name and name.strip():
            body["name"] = name.strip()
        if callback_context.triggered_id == ids.CU_BUILD_SEL:
            if not selections:
                return {"result": alert("Pick at least one saved selection.", "info")}
            body["stages"] = [int(s) for s in selections]
        else:
            try:
                body["builder"] = builder_body(**fields)
            except ValueError as exc:
                return {"result": alert(str(exc))}
        cur = ctx.api.create_curriculum(ds, body, token=token or None)
        if not cur.get("stages"):
            cur = ctx.api.curriculum(int(cur["id"]))
        # Remembered in the browser session: the experiment form offers it as an arm (the API lists no curricula).
        return {"result": panels.curriculum_card(cur), "built": [*(built_before or []), int(cur["id"])]}
