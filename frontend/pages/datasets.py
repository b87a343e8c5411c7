"""Datasets: what is there, ingest a new one, start scorer runs and watch them progress."""

from __future__ import annotations

import json
from typing import Any

from dash import ALL, Dash, Input, Output, State, callback_context, dcc, html, no_update
from dash.exceptions import PreventUpdate

from frontend import ids
from frontend.api_client import ApiError, Dataset, Run
from frontend.components import alert, card, fmt_duration, fmt_num, progress_bar, task_chip
from frontend.context import UiContext
from frontend.errors import describe, guarded
from frontend.figures import category_colors
from frontend.forms import ParamField, form_fields, params_from_form

ACTIVE = ("queued", "running")
POLL_MS = 1000


def _dataset_rows(all_ds: list[Dataset], current: int | None) -> Any:
    if not all_ds:
        return html.P(
            "No datasets yet. Ingest one with the form, or from the shell: qspace ingest FILE --name NAME.",
            className="hint",
        )
    rows = []
    for d in sorted(all_ds, key=lambda d: -int(d["id"])):
        counts = d.get("task_types") or {}
        colors = category_colors(list(counts))
        prompts = d.get("task_type_prompts") or {}
        rows.append(
            html.Tr(
                [
                    html.Td(
                        [html.Div(d["name"], className="ds-name"), html.Div(f"#{d['id']}", className="muted small")]
                    ),
                    html.Td(f"{int(d.get('n_samples', 0)):,}", className="num"),
                    html.Td(html.Div([task_chip(t, colors[t], n) for t, n in counts.items()], className="chips")),
                    html.Td(f"{len(prompts)} prompt(s)" if prompts else "\u2013", className="muted"),
                    html.Td(str(d.get("created_at", ""))[:16].replace("T", " "), className="muted small"),
                    html.Td(
                        [
                            dcc.Link("Explore", href=f"/explore?ds={d['id']}", className="btn btn-small btn-primary"),
                            dcc.Link("Runs", href=f"/datasets?ds={d['id']}", className="btn btn-small"),
                        ],
                        className="actions",
                    ),
                ],
                className="current" if int(d["id"]) == current else "",
            )
        )
    head = html.Thead(
        html.Tr(
            [
                html.Th("dataset"),
                html.Th("samples", className="num"),
                html.Th("task types"),
                html.Th("prompts"),
                html.Th("created"),
                html.Th(""),
            ]
        )
    )
    return html.Table([head, html.Tbody(rows)], className="table ds-table")


def _field_input(f: ParamField) -> Any:
    pid = {"type": ids.RUN_PARAM, "name": f.name}
    if f.kind == "enum":
        return dcc.Dropdown(
            id=pid,
            options=[{"label": str(c), "value": str(c)} for c in f.choices],
            value=None if f.default is None else str(f.default),
            clearable=f.nullable,
        )
    if f.kind == "boolean":
        return dcc.Dropdown(
            id=pid,
            options=[{"label": "yes", "value": "true"}, {"label": "no", "value": "false"}],
            value=None if f.default is None else ("true" if f.default else "false"),
            clearable=f.nullable,
        )
    if f.kind in ("integer", "number"):
        return dcc.Input(
            id=pid,
            type="number",
            value=f.default,
            step=1 if f.kind == "integer" else "any",
            min=f.minimum,
            className="input",
        )
    return dcc.Input(
        id=pid, type="text", value=f.default or "", className="input", placeholder="(none)" if f.nullable else ""
    )


def param_form(spec: dict[str, Any] | None) -> list[Any]:
    if not spec:
        return []
    fields = form_fields(spec.get("params_schema") or {})
    main = [f for f in fields if not f.runtime]
    speed = [f for f in fields if f.runtime]

    def row(f: ParamField) -> html.Div:
        return html.Div(
            [
                html.Label(f.name, className="field-label"),
                _field_input(f),
                html.Div(f.description, className="field-help") if f.description else None,
            ],
            className="param-row",
        )

    out: list[Any] = [html.P(str(spec.get("description", "")), className="hint")]
    out += [row(f) for f in main]
    if speed:
        out.append(
            html.Details(
                [html.Summary("speed settings (do not change the scores)"), *[row(f) for f in speed]],
                className="advanced",
            )
        )
    metrics = spec.get("metrics") or []
    if metrics:
        out.append(
            html.Div(["metrics: ", *[html.Code(m, className="metric") for m in metrics]], className="muted small")
        )
    return out


def _run_rows(runs: list[Run]) -> Any:
    if not runs:
        return html.P("No runs yet for this dataset.", className="hint")
    rows = []
    for r in sorted(runs, key=lambda r: -int(r["id"])):
        status = str(r.get("status", ""))
        total = int(r.get("total") or 0)
        done = int(r.get("done") or 0)
        rate = r.get("samples_per_s")
        model = str((r.get("params") or {}).get("model") or "")
        if len(model) > 42:
            model = "…" + model[-41:]
        cancel = (
            html.Button(
                "Cancel",
                id={"type": ids.RUN_CANCEL, "run": int(r["id"])},
                className="btn btn-small btn-danger",
                n_clicks=0,
            )
            if status in ACTIVE
            else None
        )
        rows.append(
            html.Div(
                [
                    html.Div(
                        [
                            html.Span(f"#{r['id']}", className="muted"),
                            html.B(str(r.get("kind", ""))),
                            html.Span(
                                model,
                                className="muted run-model",
                                title=str((r.get("params") or {}).get("model") or ""),
                            ),
                            html.Span(status, className=f"badge badge-{status}"),
                            cancel,
                        ],
                        className="run-head",
                    ),
                    progress_bar(done, total, status, int(r["id"])),
                    html.Div(
                        [
                            html.Span(f"{done:,} / {total:,}", className="run-done"),
                            html.Span(f"{fmt_num(rate, 3)} samples/s" if rate else "\u2013 samples/s"),
                            html.Span(f"ETA {fmt_duration(r.get('eta_s'))}" if status in ACTIVE else ""),
                            html.Span(
                                f"{int(r.get('errors') or 0):,} errors",
                                className="run-errors" if r.get("errors") else "muted",
                            ),
                        ],
                        className="run-stats",
                    ),
                    html.Div(str(r["message"]), className="run-message") if r.get("message") else None,
                ],
                className="run",
                id=f"run-{r['id']}",
            )
        )
    return rows


def layout(ctx: UiContext, ds: int | None, all_ds: list[Dataset]) -> Any:
    current = next((d for d in all_ds if int(d["id"]) == ds), None)
    try:
        scorers = ctx.api.scorers()
        scorer_error = None
    except ApiError as exc:
        scorers, scorer_error = [], describe(exc)
    runs: list[Run] = []
    runs_error = None
    if ds is not None:
        try:
            runs = ctx.api.runs(ds)
        except ApiError as exc:
            runs_error = describe(exc)
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
        dcc.Loading(html.Div(id=ids.INGEST_RESULT), type="dot", color="#3B82C4"),
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
    runs_card = card(
        "Runs",
        html.Div(id=ids.RUNS_ALERT, children=alert(runs_error)),
        html.Div(id=ids.RUNS_TABLE, children=_run_rows(runs) if ds is not None else None, className="runs"),
        dcc.Interval(id=ids.RUNS_POLL, interval=POLL_MS, disabled=not any(r.get("status") in ACTIVE for r in runs)),
    )
    return html.Div(
        [
            dcc.Store(id=ids.SCORERS_STORE, data={"ds": ds, "kinds": kinds}),
            card("Datasets", html.Div(id=ids.DS_TABLE, children=_dataset_rows(all_ds, ds)), html.Div(id=ids.DS_ALERT)),
            html.Div(
                [html.Div([run_card, runs_card], className="col-main"), html.Div([ingest], className="col-side")],
                className="two-col",
            ),
        ],
        className="datasets",
    )


def register(app: Dash, ctx: UiContext) -> None:
    @app.callback(
        Output(ids.RUN_PARAMS, "children"),
        Input(ids.RUN_KIND, "value"),
        prevent_initial_call=True,
    )
    @guarded(1, 0)
    def params(kind: str | None) -> Any:
        if not kind:
            return []
        spec = next((s for s in ctx.api.scorers() if s["kind"] == kind), None)
        return param_form(spec)

    @app.callback(
        Output(ids.RUN_RESULT, "children"),
        Output(ids.RUNS_TABLE, "children", allow_duplicate=True),
        Output(ids.RUNS_POLL, "disabled", allow_duplicate=True),
        Input(ids.RUN_SUBMIT, "n_clicks"),
        State(ids.RUN_KIND, "value"),
        State({"type": ids.RUN_PARAM, "name": ALL}, "value"),
        State({"type": ids.RUN_PARAM, "name": ALL}, "id"),
        State(ids.SCORERS_STORE, "data"),
        State(ids.TOKEN, "value"),
        prevent_initial_call=True,
    )
    @guarded(3, 0)
    def start(
        n: int, kind: str, values: list[Any], pids: list[dict[str, str]], store: dict[str, Any], token: str | None
    ) -> tuple[Any, ...]:
        if not n or not kind or not store or store.get("ds") is None:
            raise PreventUpdate
        spec = next((s for s in ctx.api.scorers() if s["kind"] == kind), None)
        if spec is None:
            return alert(f"the server does not know the scorer {kind!r}"), no_update, no_update
        fields = form_fields(spec.get("params_schema") or {})
        try:
            params = params_from_form(fields, {p["name"]: v for p, v in zip(pids, values, strict=False)})
        except ValueError as exc:
            return alert(str(exc)), no_update, no_update
        run = ctx.api.start_run(int(store["ds"]), kind, params, token=token or None)
        runs = ctx.api.runs(int(store["ds"]))
        return alert(f"Run #{run['id']} ({kind}) is {run.get('status', 'queued')}.", "ok"), _run_rows(runs), False

    @app.callback(
        Output(ids.RUNS_TABLE, "children"),
        Output(ids.RUNS_POLL, "disabled"),
        Output(ids.RUNS_ALERT, "children"),
        Input(ids.RUNS_POLL, "n_intervals"),
        Input({"type": ids.RUN_CANCEL, "run": ALL}, "n_clicks"),
        State(ids.SCORERS_STORE, "data"),
        State(ids.TOKEN, "value"),
        prevent_initial_call=True,
    )
    @guarded(3, 2)
    def poll(_n: int, cancels: list[int], store: dict[str, Any], token: str | None) -> tuple[Any, ...]:
        if not store or store.get("ds") is None:
            raise PreventUpdate
        trig = callback_context.triggered_id
        note = None
        if isinstance(trig, dict) and trig.get("type") == ids.RUN_CANCEL:
            if not any(cancels):
                raise PreventUpdate
            run = ctx.api.cancel_run(int(trig["run"]), token=token or None)
            note = alert(f"Run #{run['id']} is {run.get('status', 'cancelled')}.", "info")
        runs = ctx.api.runs(int(store["ds"]))
        active = any(r.get("status") in ACTIVE for r in runs)
        return _run_rows(runs), not active, note

    @app.callback(
        Output(ids.INGEST_RESULT, "children"),
        Output(ids.URL, "search", allow_duplicate=True),
        Input(ids.INGEST_SUBMIT, "n_clicks"),
        State(ids.INGEST_NAME, "value"),
        State(ids.INGEST_PATHS, "value"),
        State(ids.INGEST_IMAGE_ROOT, "value"),
        State(ids.INGEST_TASK_FIELD, "value"),
        State(ids.INGEST_PROMPTS, "value"),
        State(ids.INGEST_DEDUPE, "value"),
        State(ids.TOKEN, "value"),
        prevent_initial_call=True,
    )
    def ingest(
        n: int,
        name: str | None,
        paths: str | None,
        image_root: str | None,
        task_field: str | None,
        prompts: str | None,
        dedupe: list[str],
        token: str | None,
    ) -> tuple[Any, ...]:
        if not n:
            raise PreventUpdate
        files = [p.strip() for p in (paths or "").splitlines() if p.strip()]
        if not (name or "").strip():
            return alert("Give the dataset a name."), no_update
        if not files:
            return alert("Give at least one file path."), no_update
        body: dict[str, Any] = {"name": name.strip() if name else "", "paths": files, "dedupe": bool(dedupe)}
        if image_root and image_root.strip():
            body["image_root"] = image_root.strip()
        if task_field and task_field.strip():
            body["task_type_field"] = task_field.strip()
        if prompts and prompts.strip():
            try:
                parsed = json.loads(prompts)
            except ValueError as exc:
                return alert(f"task-type prompts: not valid JSON ({exc})"), no_update
            if not isinstance(parsed, dict):
                return alert("task-type prompts: give a JSON object {task type: prompt}"), no_update
            body["task_type_prompts"] = parsed
        try:
            d = ctx.api.create_dataset(body, token=token or None)
        except ApiError as exc:
            problems = (exc.body.get("problems") if isinstance(exc.body, dict) else None) or []
            return html.Div([alert(describe(exc)), html.Ul([html.Li(str(p)) for p in problems[:10]])]), no_update
        except Exception as exc:
            return alert(describe(exc)), no_update
        return alert(f"Ingested “{d['name']}”: {int(d.get('n_samples', 0)):,} samples.", "ok"), f"?ds={d['id']}"
