"""Datasets' ingest form at work: POST /api/datasets answers 202 with an ingest job; the form then polls the job
(GET /api/jobs/{id}) and shows its progress bar with a Cancel, then the dataset it made (the page moves to it) or
its error (which names file, record and field)."""

from __future__ import annotations

import json
from typing import Any

from dash import ALL, Dash, Input, Output, State, callback_context, dcc, html
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_shapes import ApiError, Job
from frontend.callbacks import named_callback
from frontend.components import alert, progress_bar
from frontend.context import UiContext
from frontend.errors import Outputs, describe
from frontend.pages.pending import ACTIVE, job_label, percent

POLL_MS = 500
UNITS = {"byte": "bytes"}


def moving_ingest(jobs: list[Job]) -> Job | None:
    """The newest ingest still queued or running (started before this page was opened, here or by a script)."""
    moving = [j for j in jobs if j.get("kind") == "ingest" and j.get("status") in ACTIVE]
    return max(moving, key=lambda j: int(j.get("id") or 0)) if moving else None


def ingest_watch(job: Job | None = None) -> list[Any]:
    """The ingest's result area, the job it follows and the interval that follows it (part of the ingest card);
    given a moving job, it is followed from the start."""
    return [
        html.Div(id=ids.INGEST_RESULT, children=ingest_progress(job) if job is not None else None),
        dcc.Store(id=ids.INGEST_JOB, data=int(job["id"]) if job is not None else None),
        dcc.Interval(id=ids.INGEST_POLL, interval=POLL_MS, disabled=job is None),
    ]


def ingest_progress(job: Job) -> Any:
    """A moving ingest: its bar, how far it is, what it does, a Cancel."""
    status = str(job.get("status", ""))
    done, total = int(job.get("done") or 0), int(job.get("total") or 0)
    share = percent(done, total)
    unit = UNITS.get(str(job.get("unit") or ""), str(job.get("unit") or ""))
    return html.Div(
        [
            html.Div(
                [
                    html.Span(f"job #{job.get('id')}", className="muted"),
                    html.B(job_label(job)),
                    html.Span(status, className=f"badge badge-{status}"),
                    html.Button(
                        "Cancel",
                        id={"type": ids.INGEST_CANCEL, "job": int(job.get("id") or 0)},
                        className="btn btn-small btn-danger",
                        n_clicks=0,
                    ),
                ],
                className="run-head",
            ),
            progress_bar(done, total, status),
            html.Div(
                [
                    html.Span(f"{done:,} / {total:,} {unit}".rstrip() if total else "starting"),
                    html.Span(f"{share:.0f}%" if share is not None else ""),
                    html.Span(str(job.get("message") or ""), className="muted job-message"),
                ],
                className="run-stats",
            ),
        ],
        className="run job ingest-job",
        id=f"ingest-job-{job.get('id')}",
    )


def ended(job: Job) -> Outputs:
    """What the form shows once the job has ended; a done ingest moves the page to its dataset."""
    status = str(job.get("status", ""))
    result = job.get("result") or {}
    if status == "done" and result.get("dataset_id") is not None:
        n = int(result.get("n_samples") or 0)
        return {
            "result": alert(f"Ingested: {n:,} samples (dataset #{result['dataset_id']}).", "ok"),
            "search": f"?ds={int(result['dataset_id'])}",
            "poll_off": True,
        }
    if status == "cancelled":
        return {"result": alert("Ingest cancelled: nothing was ingested.", "info"), "poll_off": True}
    problems = str(job.get("error") or "the ingest failed").splitlines()
    return {
        "result": html.Div(
            [
                alert(f"Nothing was ingested: {problems[0]}"),
                html.Ul([html.Li(p) for p in problems[1:11]]) if len(problems) > 1 else None,
            ]
        ),
        "poll_off": True,
    }


def register(app: Dash, ctx: UiContext) -> None:
    @named_callback(
        app,
        output={
            "result": Output(ids.INGEST_RESULT, "children"),
            "search": Output(ids.URL, "search", allow_duplicate=True),
            "job": Output(ids.INGEST_JOB, "data"),
            "poll_off": Output(ids.INGEST_POLL, "disabled"),
        },
        inputs={"clicks": Input(ids.INGEST_SUBMIT, "n_clicks")},
        state={
            "name": State(ids.INGEST_NAME, "value"),
            "paths": State(ids.INGEST_PATHS, "value"),
            "image_root": State(ids.INGEST_IMAGE_ROOT, "value"),
            "task_field": State(ids.INGEST_TASK_FIELD, "value"),
            "prompts": State(ids.INGEST_PROMPTS, "value"),
            "dedupe": State(ids.INGEST_DEDUPE, "value"),
            "token": State(ids.TOKEN, "value"),
        },
        prevent_initial_call=True,
    )
    def ingest(
        clicks: int,
        name: str | None,
        paths: str | None,
        image_root: str | None,
        task_field: str | None,
        prompts: str | None,
        dedupe: list[str],
        token: str | None,
    ) -> Outputs:
        """Start an ingest of files on the server; its job is then followed by `follow`."""
        if not clicks:
            raise PreventUpdate
        files = [p.strip() for p in (paths or "").splitlines() if p.strip()]
        if not (name or "").strip():
            return {"result": alert("Give the dataset a name.")}
        if not files:
            return {"result": alert("Give at least one file path.")}
        body: dict[str, Any] = {"name": name.strip() if name else "", "paths": files, "dedupe": bool(dedupe)}
        if image_root and image_root.strip():
            body["image_root"] = image_root.strip()
        if task_field and task_field.strip():
            body["task_type_field"] = task_field.strip()
        if prompts and prompts.strip():
            try:
                parsed = json.loads(prompts)
            except ValueError as exc:
                return {"result": alert(f"task-type prompts: not valid JSON ({exc})")}
            if not isinstance(parsed, dict):
                return {"result": alert("task-type prompts: give a JSON object {task type: prompt}")}
            body["task_type_prompts"] = parsed
        try:
            answer = ctx.api.create_dataset(body, token=token or None)
        except ApiError as exc:
            problems = (exc.body.get("problems") if isinstance(exc.body, dict) else None) or []
            return {"result": html.Div([alert(describe(exc)), html.Ul([html.Li(str(p)) for p in problems[:10]])])}
        except Exception as exc:
            return {"result": alert(describe(exc))}
        job: Job = answer["job"]
        if job.get("status") not in ACTIVE:
            return {**ended(job), "job": int(job["id"])}
        return {"result": ingest_progress(job), "job": int(job["id"]), "poll_off": False}

    @named_callback(
        app,
        output={
            "result": Output(ids.INGEST_RESULT, "children", allow_duplicate=True),
            "search": Output(ids.URL, "search", allow_duplicate=True),
            "poll_off": Output(ids.INGEST_POLL, "disabled", allow_duplicate=True),
        },
        inputs={
            "ticks": Input(ids.INGEST_POLL, "n_intervals"),
            "cancels": Input({"type": ids.INGEST_CANCEL, "job": ALL}, "n_clicks"),
        },
        state={"job_id": State(ids.INGEST_JOB, "data"), "token": State(ids.TOKEN, "value")},
        alert="result",
        prevent_initial_call=True,
    )
    def follow(ticks: int, cancels: list[int], job_id: int | None, token: str | None) -> Outputs:
        """The ingest job's progress while it moves; Cancel stops it; its end as `ended` says."""
        if job_id is None:
            raise PreventUpdate
        trig = callback_context.triggered_id
        if isinstance(trig, dict) and trig.get("type") == ids.INGEST_CANCEL:
            if not any(cancels):
                raise PreventUpdate
            job = ctx.api.cancel_job(int(job_id), token=token or None)
        else:
            job = ctx.api.job(int(job_id))
        if job.get("status") in ACTIVE:
            return {"result": ingest_progress(job)}
        return ended(job)
