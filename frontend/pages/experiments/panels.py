"""The Experiments page's panels: the list, one experiment's head (downloads), its jobs with live progress (the
results are `results`'). Pure: an experiment (the API's JSON) in, Dash components out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from dash import dcc, html

from frontend.api_client import ApiClient
from frontend.api_shapes import Experiment
from frontend.components import data_attr, fmt_duration, fmt_num, progress_bar
from frontend.figures.experiments import finite, short_arm_label

ACTIVE = ("queued", "running")


def is_active(exp: Mapping[str, Any]) -> bool:
    """Whether anything of the experiment is still queued or running (the page polls while it is)."""
    return exp.get("status") in ACTIVE or any(j.get("status") in ACTIVE for j in exp.get("jobs") or [])


def experiment_href(ds: int, exp_id: int) -> str:
    return f"/experiments?{urlencode({'ds': ds, 'exp': exp_id})}"


def explore_href(ds: int, sel_id: int) -> str:
    """Explore with the saved selection opened: its region drawn on the plane it was drawn on."""
    return f"/explore?{urlencode({'ds': ds, 'sel': sel_id})}"


def title(exp: Mapping[str, Any]) -> str:
    return f"#{exp['id']} {exp.get('name') or 'experiment'}"


def badge(status: str) -> html.Span:
    return html.Span(status, className=f"badge badge-{status}")


# --- the list ----------------------------------------------------------------------------------------------


def experiment_list(exps: list[Experiment], current: int | None, ds: int) -> Any:
    """The dataset's experiments, newest first, each a link that opens it."""
    if not exps:
        return html.P("No experiments yet.", className="hint")
    rows = []
    for e in sorted(exps, key=lambda e: -int(e["id"])):
        jobs = e.get("jobs") or []
        done = sum(j.get("status") == "done" for j in jobs)
        treated = sum(a.get("kind") != "control" for a in e.get("arms") or [])
        rows.append(
            dcc.Link(
                [
                    html.Div([html.B(title(e)), badge(str(e.get("status", "")))], className="xp-row-head"),
                    html.Div(
                        f"{treated} arm(s) · {len(e.get('seeds') or [])} seed(s) · {done}/{len(jobs)} jobs done",
                        className="muted small",
                    ),
                ],
                href=experiment_href(ds, int(e["id"])),
                className="xp-row active" if int(e["id"]) == current else "xp-row",
                id={"type": "xp-row", "exp": int(e["id"])},
            )
        )
    return rows


# --- one experiment: head, jobs ----------------------------------------------------------------------------


def head(exp: Experiment) -> list[Any]:
    """Name, status, what it trains and evaluates, and the downloads."""
    params = exp.get("train_params") or {}
    suites = ", ".join(str(s.get("name")) for s in exp.get("eval_suites") or []) or "\u2013"
    eid = int(exp["id"])
    return [
        html.Div(
            [html.H2(title(exp), className="xp-title"), badge(str(exp.get("status", "")))],
            className="xp-head-line",
            **data_attr("status", exp.get("status", "")),
        ),
        html.Div(
            [
                html.Span(["base model ", html.Code(str(exp.get("base_model", "")))]),
                html.Span(f"seeds {', '.join(map(str, exp.get('seeds') or []))}"),
                html.Span(f"training {params.get('preset', '?')} ({params.get('method', '?')})"),
                html.Span(f"control {exp.get('control', 'random')}"),
                html.Span(f"eval {suites}"),
            ],
            className="xp-facts muted",
        ),
        html.Div(exp.get("message") or "", className="muted small") if exp.get("message") else None,
        html.Div(
            [
                html.A(
                    "Manifest (JSON)",
                    href=ApiClient.experiment_manifest_path(eid),
                    download="",
                    className="btn btn-link",
                    id="xp-manifest",
                ),
                html.A(
                    "Results per job (CSV)",
                    href=ApiClient.experiment_results_csv_path(eid),
                    download="",
                    className="btn btn-link",
                    id="xp-csv",
                ),
            ],
            className="export-links",
        ),
    ]


def job_labels(exp: Mapping[str, Any]) -> dict[str, str]:
    """{job id: 'selection #3 top · seed 0'} for tables and the loss figure."""
    arms = {int(a["id"]): a for a in exp.get("arms") or []}
    return {
        str(j["id"]): f"{short_arm_label(arms[int(j['arm_id'])], arms)} · seed {j.get('seed')}"
        if int(j["arm_id"]) in arms
        else f"job {j['id']}"
        for j in exp.get("jobs") or []
    }


def job_groups(exp: Mapping[str, Any]) -> dict[str, str]:
    """{job id: its arm's short label}: the loss figure draws an arm's seeds in one colour."""
    arms = {int(a["id"]): a for a in exp.get("arms") or []}
    return {
        str(j["id"]): short_arm_label(arms[int(j["arm_id"])], arms)
        for j in exp.get("jobs") or []
        if int(j["arm_id"]) in arms
    }


def jobs_table(exp: Experiment) -> Any:
    """Every job (arm x seed): status, progress (step of total), the latest loss, samples/s, ETA, error."""
    jobs = exp.get("jobs") or []
    if not jobs:
        return html.P("No jobs.", className="hint")
    labels = job_labels(exp)
    rows = []
    for j in jobs:
        status = str(j.get("status", ""))
        step, total = int(j.get("step") or 0), int(j.get("total_steps") or 0)
        phase = j.get("phase")
        rate = finite(j.get("samples_per_s"))
        rows.append(
            html.Tr(
                [
                    html.Td(labels.get(str(j["id"]), "")),
                    html.Td(badge(status)),
                    html.Td(
                        [
                            progress_bar(step, total, status, int(j["id"])),
                            html.Span(
                                f"{step:,} / {total:,}" + (f" · {phase}" if phase and status == "running" else ""),
                                className="xp-step small",
                                **data_attr("step", step),
                            ),
                        ],
                        className="xp-progress",
                    ),
                    html.Td(fmt_num(finite(j.get("loss")), 4), className="num"),
                    html.Td(f"{rate:,.1f}" if rate is not None else "\u2013", className="num"),
                    html.Td(fmt_duration(finite(j.get("eta_s"))) if status in ACTIVE else "", className="num"),
                    html.Td(str(j.get("error") or ""), className="xp-error"),
                ],
                className=f"xp-job xp-job-{status}",
                **data_attr("job", j["id"]),
            )
        )
    return html.Table(
        [
            html.Thead(
                html.Tr(
                    [
                        html.Th("arm · seed"),
                        html.Th("status"),
                        html.Th("progress (steps)"),
                        html.Th("loss", className="num"),
                        html.Th("samples/s", className="num"),
                        html.Th("ETA", className="num"),
                        html.Th("error"),
                    ]
                )
            ),
            html.Tbody(rows),
        ],
        className="table compact xp-jobs-table",
    )


def results_key(exp: Mapping[str, Any]) -> str:
    """What the drawn results depend on: the status and which jobs are done (redrawn only when it changes)."""
    done = sorted(int(j["id"]) for j in exp.get("jobs") or [] if j.get("status") == "done")
    return f"{exp.get('id')}|{exp.get('status')}|{','.join(map(str, done))}"
