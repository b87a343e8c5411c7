"""The Experiments page's callbacks: poll the open experiment while a job is queued or running (progress, loss
curve, results as jobs finish), and cancel it. Every output, input and state by name (frontend.callbacks)."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, callback_context
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.callbacks import named_callback
from frontend.components import alert
from frontend.context import UiContext
from frontend.errors import Outputs
from frontend.figures.experiments import loss_figure, merge_loss_history
from frontend.pages.experiments import panels, results
from frontend.pages.experiments.layout import cancel_style


def register(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={
            "head": Output(ids.XP_HEAD, "children"),
            "cancel_style": Output(ids.XP_CANCEL, "style"),
            "jobs": Output(ids.XP_JOBS, "children"),
            "loss": Output(ids.XP_LOSS, "data"),
            "loss_figure": Output(ids.XP_LOSS_GRAPH, "figure"),
            "results": Output(ids.XP_RESULTS, "children"),
            "results_key": Output(ids.XP_RESULTS_KEY, "data"),
            "listing": Output(ids.XP_LIST, "children"),
            "poll_off": Output(ids.XP_POLL, "disabled"),
            "alert": Output(ids.XP_ALERT, "children"),
        },
        inputs={"ticks": Input(ids.XP_POLL, "n_intervals"), "cancel_clicks": Input(ids.XP_CANCEL, "n_clicks")},
        state={
            "setup": State(ids.XP_SETUP, "data"),
            "history": State(ids.XP_LOSS, "data"),
            "drawn": State(ids.XP_RESULTS_KEY, "data"),
            "shown": State(ids.XP_ALERT, "children"),
            "token": State(ids.TOKEN, "value"),
        },
        alert="alert",
        prevent_initial_call=True,
    )
    def poll(
        ticks: int | None,
        cancel_clicks: int | None,
        setup: dict[str, Any] | None,
        history: dict[str, Any] | None,
        drawn: str | None,
        shown: Any,
        token: str | None,
    ) -> Outputs:
        """The open experiment now; its results and the list are redrawn only when a job finished."""
        if not setup or setup.get("exp") is None:
            raise PreventUpdate
        exp_id = int(setup["exp"])
        out: Outputs = {}
        if callback_context.triggered_id == ids.XP_CANCEL:
            if not cancel_clicks:
                raise PreventUpdate
            exp = ctx.api.cancel_experiment(exp_id, token=token or None)
            out["alert"] = alert(f"Experiment #{exp_id} is {exp.get('status', 'cancelled')}.", "info")
        else:
            exp = ctx.api.experiment(exp_id)
            if shown and "alert-error" in str(shown):
                out["alert"] = None  # the API answers again: the error is gone (a note after cancel stays)
        loss = merge_loss_history(history, exp.get("jobs") or [])
        active = panels.is_active(exp)
        out |= {
            "head": panels.head(exp),
            "cancel_style": cancel_style(active),
            "jobs": panels.jobs_table(exp),
            "loss": loss,
            "loss_figure": loss_figure(loss, panels.job_labels(exp), panels.job_groups(exp)),
            "poll_off": not active,
        }
        key = panels.results_key(exp)
        if key != drawn:
            out["results"] = results.results_view(exp)
            out["results_key"] = key
            out["listing"] = panels.experiment_list(ctx.api.experiments(int(setup["ds"])), exp_id, int(setup["ds"]))
        return out
