"""Explore's waiting state, wired: while the plane waits for its scores, poll and say what is still being
computed; put the plane page in place of the waiting state (no reload) as soon as it can be drawn, or at once
when asked to show what is scored so far. The interval goes with the waiting state: polling stops there."""

from __future__ import annotations

from dash import Dash, Input, Output, State, callback_context
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.callbacks import named_callback
from frontend.context import UiContext
from frontend.errors import Outputs
from frontend.pages.explore.layout import plane_axes, plane_page, still_computing
from frontend.pages.explore.panels import computing_status, show_now_style


def register_waiting(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={
            "body": Output(ids.EX_BODY, "children"),
            "status": Output(ids.EX_WAIT_STATUS, "children"),
            "show_style": Output(ids.EX_WAIT_SHOW, "style"),
        },
        inputs={"ticks": Input(ids.EX_WAIT_POLL, "n_intervals"), "show_now": Input(ids.EX_WAIT_SHOW, "n_clicks")},
        state={"ds": State(ids.EX_WAIT_DS, "data")},
        alert="status",
        prevent_initial_call=True,
    )
    def poll(ticks: int | None, show_now: int | None, ds: int | None) -> Outputs:
        if ds is None:
            raise PreventUpdate
        asked = callback_context.triggered_id == ids.EX_WAIT_SHOW and bool(show_now)
        axes = plane_axes(ctx, int(ds))
        parts = [] if asked else still_computing(ctx, int(ds), axes)
        if parts:
            return {"status": computing_status(parts), "show_style": show_now_style(bool(axes.options))}
        return {"body": plane_page(ctx.api.dataset(int(ds)), axes)}
