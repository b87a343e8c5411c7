"""Datasets' layout: the datasets table, the scorer form, the background jobs and the runs (polled while one is
active), ingest."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from frontend import ids
from frontend.api_shapes import ApiError, Dataset, Job, Run
from frontend.components import alert, card
from frontend.context import UiContext
from frontend.errors import describe
from frontend.pages.datasets.ingesting import ingest_watch, moving_ingest
from frontend.pages.datasets.panels import ACTIVE, dataset_rows, job_rows, param_form, run_rows

POLL_MS = 1000


def layout(ctx: UiContext, ds: int | None, all_ds: list[Dataset]) -> Any:
    current = next((d for d in all_ds if int(d["id"]) == ds), None)
    try:
        scorers = ctx.api.scorers()
        scorer_error = None
    except ApiError as exc:
        scorers, scorer_error = [], describe(exc)
    runs: list[Run] = []
    jobs: list[Job] = []
    runs_error = None
    if ds is not None:
        try:
            runs = ctx.api.runs(ds)
        except ApiError as exc:
            runs_error = describe(exc)
        try:
            jobs = ctx.api.jobs(ds)
        except ApiError:
            jobs = []  # an API without jobs: the runs are all there is to show
    try:
        active_jobs = ctx.api.jobs(active=True)  # an ingest under way (its job has no dataset yet)
    except ApiError:
        active_jobs = []
    kinds = [s["kind"] for s in scorers]
    default_kind = "clip" if "clip" in kinds else (kinds[0] if kinds else None)
    ingest = card(
        "Ingest a dataset",
        html.P(
            "Files on the server, under QSPACE_DATA_ROOTS: LLaVA JSON (a list) or JSONL; "
            "several files make one dataset.",
            className="hint",
        ),
        html.Label("name", className="field-label"),
        dcc.Input(id=ids.INGEST_NAME, className="input", placeholder="e.g. svit-core", maxLength=200),
        html.Label("files (one path per line)", className="field-label"),
        dcc.Textarea(id=ids.INGEST_PATHS, className="input textarea", placeholder="/data/svit/detail_description.json"),
        html.Label("image root", className="field-label"),
        dcc.Input(id=ids.INGEST_IMAGE_ROOT, className="input", placeholder="/data/svit/images"),
        html.Label("task-type field (optional)", className="field-label"),
        dcc.Input(id=ids.INGEST_TASK_FIELD, className="input", placeholder="e.g. task_type"),
        html.Label("task-type prompts (optional JSON: {type: prompt})", className="field-label"),
        dcc.Textarea(id=ids.INGEST_PROMPTS, className="input textarea small-ta", placeholder='{"referring_qa": "..."}'),
        dcc.Checklist(
            id=ids.INGEST_DEDUPE,
            options=[{"label": "keep the first of repeated ids", "value": "dedupe"}],
            value=[],
            className="checklist",
            inputClassName="check",
        ),
        html.Button("Ingest", id=ids.INGEST_SUBMIT, className="btn btn-primary", n_clicks=0),
        *ingest_watch(moving_ingest(active_jobs)),  # the ingest's job, followed while it moves
    )
    if ds is None:
        run_card = card("Score", html.P("Ingest or pick a dataset first.", className="hint"))
    else:
        run_card = card(
            f"Score “{current['name'] if current else ds}”",
            alert(scorer_error),
            html.Label("scorer", className="field-label"),
            dcc.RadioItems(
                id=ids.RUN_KIND,
                options=[{"label": s["kind"], "value": s["kind"]} for s in scorers],
                value=default_kind,
                className="segmented",
                inputClassName="segmented-input",
                labelClassName="segmented-label",
            ),
            html.Div(
                id=ids.RUN_PARAMS,
                className="params",
                children=param_form(next((s for s in scorers if s["kind"] == default_kind), None)),
            ),
            html.Button("Start run", id=ids.RUN_SUBMIT, className="btn btn-primary", n_clicks=0),
            html.Div(id=ids.RUN_RESULT),
        )
    moving = any(r.get("status") in ACTIVE for r in [*runs, *jobs])
    runs_card = card(
        "Runs",
        html.Div(id=ids.RUNS_ALERT, children=alert(runs_error)),
        html.Div(id=ids.JOBS_TABLE, children=job_rows(jobs), className="runs jobs"),
        html.Div(id=ids.RUNS_TABLE, children=run_rows(runs) if ds is not None else None, className="runs"),
        dcc.Interval(id=ids.RUNS_POLL, interval=POLL_MS, disabled=not moving),
    )
    return html.Div(
        [
            dcc.Store(id=ids.SCORERS_STORE, data={"ds": ds, "kinds": kinds}),
            card("Datasets", html.Div(id=ids.DS_TABLE, children=dataset_rows(all_ds, ds)), html.Div(id=ids.DS_ALERT)),
            html.Div(
                [
                    html.Div(
                        # While work moves, its progress comes first (where "Watch the progress" leads).
                        [runs_card, run_card] if moving else [run_card, runs_card],
                        className="col-main",
                    ),
                    html.Div([ingest], className="col-side"),
                ],
                className="two-col",
            ),
        ],
        className="datasets",
    )
