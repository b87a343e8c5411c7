"""Datasets' callbacks: a scorer's form, starting and cancelling runs, polling their progress; ingesting is in
`ingesting`.
Every output, input and state by name (frontend.callbacks)."""

from __future__ import annotations

from typing import Any

from dash import ALL, Dash, Input, Output, State, callback_context
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_shapes import ApiError
from frontend.callbacks import named_callback
from frontend.components import alert
from frontend.context import UiContext
from frontend.errors import Outputs
from frontend.forms import form_fields, params_from_form
from frontend.pages.datasets.ingesting import register as register_ingest
from frontend.pages.datasets.panels import ACTIVE, job_rows, param_form, run_rows


def register(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={"form": Output(ids.RUN_PARAMS, "children")},
        inputs={"kind": Input(ids.RUN_KIND, "value")},
        alert="form",
        prevent_initial_call=True,
    )
    def params(kind: str | None) -> Outputs:
        if not kind:
            return {"form": []}
        spec = next((s for s in ctx.api.scorers() if s["kind"] == kind), None)
        return {"form": param_form(spec)}

    @named_callback(
        app,
        output={
            "result": Output(ids.RUN_RESULT, "children"),
            "runs": Output(ids.RUNS_TABLE, "children", allow_duplicate=True),
            "poll_off": Output(ids.RUNS_POLL, "disabled", allow_duplicate=True),
        },
        inputs={"clicks": Input(ids.RUN_SUBMIT, "n_clicks")},
        state={
            "kind": State(ids.RUN_KIND, "value"),
            "values": State({"type": ids.RUN_PARAM, "name": ALL}, "value"),
            "param_ids": State({"type": ids.RUN_PARAM, "name": ALL}, "id"),
            "store": State(ids.SCORERS_STORE, "data"),
            "token": State(ids.TOKEN, "value"),
        },
        alert="result",
        prevent_initial_call=True,
    )
    def start(
        clicks: int,
        kind: str,
        values: list[Any],
        param_ids: list[dict[str, str]],
        store: dict[str, Any],
        token: str | None,
    ) -> Outputs:
        if not clicks or not kind or not store or store.get("ds") is None:
            raise PreventUpdate
        spec = next((s for s in ctx.api.scorers() if s["kind"] == kind), None)
        if spec is None:
            return {"result": alert(f"the server does not know the scorer {kind!r}")}
        fields = form_fields(spec.get("params_schema") or {})
        try:
            params = params_from_form(fields, {p["name"]: v for p, v in zip(param_ids, values, strict=False)})
        except ValueError as exc:
            return {"result": alert(str(exc))}
        run = ctx.api.start_run(int(store["ds"]), kind, params, token=token or None)
        runs = ctx.api.runs(int(store["ds"]))
        return {
            "result": alert(f"Run #{run['id']} ({kind}) is {run.get('status', 'queued')}.", "ok"),
            "runs": run_rows(runs),
            "poll_off": False,
        }

    @named_callback(
        app,
        output={
            "runs": Output(ids.RUNS_TABLE, "children"),
            "jobs": Output(ids.JOBS_TABLE, "children"),
            "poll_off": Output(ids.RUNS_POLL, "disabled"),
            "alert": Output(ids.RUNS_ALERT, "children"),
        },
        inputs={
            "ticks": Input(ids.RUNS_POLL, "n_intervals"),
            "cancels": Input({"type": ids.RUN_CANCEL, "run": ALL}, "n_clicks"),
            "job_cancels": Input({"type": ids.JOB_CANCEL, "job": ALL}, "n_clicks"),
        },
        state={"store": State(ids.SCORERS_STORE, "data"), "token": State(ids.TOKEN, "value")},
        alert="alert",
        prevent_initial_call=True,
    )
    def poll(
        ticks: int, cancels: list[int], job_cancels: list[int], store: dict[str, Any], token: str | None
    ) -> Outputs:
        """Runs and background jobs, refreshed while one of them moves; Cancel on either."""
        if not store or store.get("ds") is None:
            raise PreventUpdate
        trig = callback_context.triggered_id
        note = None
        if isinstance(trig, dict) and trig.get("type") == ids.RUN_CANCEL:
            if not any(cancels):
                raise PreventUpdate
            run = ctx.api.cancel_run(int(trig["run"]), token=token or None)
            note = alert(f"Run #{run['id']} is {run.get('status', 'cancelled')}.", "info")
        elif isinstance(trig, dict) and trig.get("type") == ids.JOB_CANCEL:
            if not any(job_cancels):
                raise PreventUpdate
            job = ctx.api.cancel_job(int(trig["job"]), token=token or None)
            note = alert(f"Job #{job['id']} is {job.get('status', 'cancelled')}.", "info")
        runs = ctx.api.runs(int(store["ds"]))
        try:
            jobs = ctx.api.jobs(int(store["ds"]))
        except ApiError:
            jobs = []
        active = any(x.get("status") in ACTIVE for x in [*runs, *jobs])
        return {"runs": run_rows(runs), "jobs": job_rows(jobs), "poll_off": not active, "alert": note}

    register_ingest(app, ctx)  # the ingest form and its job (frontend/pages/datasets/ingesting.py)

