"""The Experiments page: the dataset's experiments on the left; the open one (`?exp=ID`, else the newest) on the
right: its head with downloads and cancel, its jobs with live progress and the training loss, its results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dash import dcc, html

from frontend import ids
from frontend.api_shapes import Dataset, Experiment
from frontend.components import card, empty_state
from frontend.context import UiContext
from frontend.figures.experiments import loss_figure, merge_loss_history
from frontend.pages.experiments import panels, results

POLL_MS = 1500  # how often the open experiment's progress is asked for while a job is queued or running


def chosen(exps: list[Experiment], wanted: Any) -> Experiment | None:
    """The experiment named by `?exp=` when it is one of the dataset's, else the newest; None when none."""
    by_id = {int(e["id"]): e for e in exps}
    if isinstance(wanted, str) and wanted.isdigit() and int(wanted) in by_id:
        return by_id[int(wanted)]
    return by_id[max(by_id)] if by_id else None


def layout(ctx: UiContext, ds: int | None, all_ds: list[Dataset], query: Mapping[str, str] | None = None) -> Any:
    if ds is None:
        return empty_state("No dataset yet", "Ingest and score a dataset first.", "/datasets", "Go to Datasets")
    exps = ctx.api.experiments(ds)
    exp = chosen(exps, (query or {}).get("exp"))
    if exp is None:
        return empty_state(
            "No experiments yet",
            "An experiment trains the base model on a selection (or a curriculum) and on an equal-size random "
            "control, for a few seeds, then scores both on eval suites. Start one from a selection on Explore "
            "or from the Curriculum page: “Train & compare with random”.",
            f"/explore?ds={ds}",
            "Go to Explore",
        )
    eid = int(exp["id"])
    loss = merge_loss_history(None, exp.get("jobs") or [])
    active = panels.is_active(exp)
    return html.Div(
        [
            dcc.Store(id=ids.XP_SETUP, data={"ds": ds, "exp": eid}),
            dcc.Store(id=ids.XP_LOSS, data=loss),
            dcc.Store(id=ids.XP_RESULTS_KEY, data=panels.results_key(exp)),
            dcc.Interval(id=ids.XP_POLL, interval=POLL_MS, disabled=not active),
            html.Div(
                [
                    card("Experiments", html.Div(panels.experiment_list(exps, eid, ds), id=ids.XP_LIST)),
                    html.Div(
                        [
                            card(
                                None,
                                html.Div(panels.head(exp), id=ids.XP_HEAD),
                                html.Button(
                                    "Cancel experiment",
                                    id=ids.XP_CANCEL,
                                    className="btn btn-small btn-danger",
                                    n_clicks=0,
                                    style=cancel_style(active),
                                    title="Stop its queued and running jobs (a running job keeps its checkpoint: "
                                    "posting the experiment again resumes it)",
                                ),
                                html.Div(id=ids.XP_ALERT),
                                class_name="xp-head",
                            ),
                            card(
                                "Jobs",
                                html.Div(panels.jobs_table(exp), id=ids.XP_JOBS),
                                dcc.Graph(
                                    id=ids.XP_LOSS_GRAPH,
                                    figure=loss_figure(loss, panels.job_labels(exp), panels.job_groups(exp)),
                                    config={"displaylogo": False, "displayModeBar": False},
                                    className="xp-loss",
                                ),
                            ),
                            card(
                                "Results",
                                html.P(
                                    "Each arm beside its equal-size random control (drawn from the same population, "
                                    "per seed): mean and 95% CI over seeds. The delta is arm minus control with a "
                                    "paired bootstrap 95% CI over eval items and seeds; when that CI includes 0 the "
                                    "experiment gives no evidence that the selection beats random.",
                                    className="hint",
                                ),
                                html.Div(results.results_view(exp), id=ids.XP_RESULTS),
                            ),
                        ],
                        className="xp-main",
                    ),
                ],
                className="xp-grid",
            ),
        ],
        className="experiments",
    )


def cancel_style(active: bool) -> dict[str, str]:
    return {} if active else {"display": "none"}
