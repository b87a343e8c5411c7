"""Datasets' panels: the datasets table, a scorer's parameter form (from its JSON schema), the runs with
their progress, and the background jobs (e.g. the demo's model training) above them."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from frontend import ids
from frontend.api_shapes import Dataset, Job, Run
from frontend.components import fmt_duration, fmt_num, progress_bar, task_chip
from frontend.figures import category_colors
from frontend.forms import ParamField, form_fields
from frontend.pages.pending import ACTIVE, job_label, jobs_to_show, percent

__all__ = ["ACTIVE", "dataset_rows", "field_input", "job_rows", "param_form", "run_rows"]


def dataset_rows(all_ds: list[Dataset], current: int | None) -> Any:
    """Every dataset, newest first: size, task types, prompts, links to explore it and to its runs."""
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


def field_input(f: ParamField) -> Any:
    """The input for one scorer parameter, by its kind (id: {"type": RUN_PARAM, "name": ...})."""
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
    """A scorer's parameters as a form; the speed settings (which do not change scores) folded away."""
    if not spec:
        return []
    fields = form_fields(spec.get("params_schema") or {})
    main = [f for f in fields if not f.runtime]
    speed = [f for f in fields if f.runtime]

    def row(f: ParamField) -> html.Div:
        return html.Div(
            [
                html.Label(f.name, className="field-label"),
                field_input(f),
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


def run_rows(runs: list[Run]) -> Any:
    """The dataset's runs, newest first: status, progress, rate, ETA, errors, a Cancel for active ones."""
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


def job_rows(jobs: list[Job]) -> list[Any]:
    """The dataset's background jobs that matter now (active ones, and the newest of a kind when it failed):
    what they do, a progress bar, where they are, a Cancel for active ones."""
    rows = []
    for j in jobs_to_show(jobs):
        status = str(j.get("status", ""))
        done, total = int(j.get("done") or 0), int(j.get("total") or 0)
        share = percent(done, total)
        cancel = (
            html.Button(
                "Cancel",
                id={"type": ids.JOB_CANCEL, "job": int(j["id"])},
                className="btn btn-small btn-danger",
                n_clicks=0,
            )
            if status in ACTIVE
            else None
        )
        unit = str(j.get("unit") or "")
        rows.append(
            html.Div(
                [
                    html.Div(
                        [
                            html.Span(f"job #{j['id']}", className="muted"),
                            html.B(job_label(j)),
                            html.Span(status, className=f"badge badge-{status}"),
                            cancel,
                        ],
                        className="run-head",
                    ),
                    progress_bar(done, total, status),
                    html.Div(
                        [
                            html.Span(f"{done:,} / {total:,} {unit}".rstrip() if total else "starting"),
                            html.Span(f"{share:.0f}%" if share is not None else ""),
                            html.Span(str(j.get("message") or ""), className="muted job-message"),
                        ],
                        className="run-stats",
                    ),
                    html.Div(str(j["error"]), className="run-message") if j.get("error") else None,
                ],
                className="run job",
                id=f"job-{j['id']}",
            )
        )
    return rows
