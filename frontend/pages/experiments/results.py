"""An experiment's results: per eval suite and metric, every arm beside its random control (error bars over
seeds), the deltas only with their CI and what each means, the breakdown per item type; then the contrasts between
arms. Pure: an experiment (the API's JSON) in, Dash components out (the figures: frontend.figures.experiments)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dash import dcc, html

from frontend.api_shapes import Experiment
from frontend.components import data_attr
from frontend.figures.experiments import (
    ArmPoint,
    Verdict,
    arm_points,
    ci_bounds,
    delta_figure,
    finite,
    fmt_ci,
    fmt_value,
    results_figure,
    short_arm_label,
    suite_metrics,
    verdict,
)
from frontend.pages.experiments.panels import explore_href, is_active

FIGURE_CONFIG: Any = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"], "responsive": True}


def mean_ci(mean: float | None, ci: tuple[float, float] | None) -> str:
    """'0.412 [0.380, 0.444]'; the mean alone says its CI is unavailable."""
    if mean is None:
        return "\u2013"
    return f"{fmt_value(mean)} {fmt_ci(*ci)}" if ci else f"{fmt_value(mean)} (CI unavailable)"


def delta_cell(v: Verdict | None) -> Any:
    """A delta with its CI and what it means; never a delta alone (no CI: 'no delta yet')."""
    if v is None:
        return html.Td(html.Span("no delta yet (its CI needs the arm's and its control's results)", className="muted"))
    return html.Td(
        [
            html.Span(v.text, className="xp-delta"),
            html.Div(v.label, className=f"xp-verdict xp-verdict-{v.kind}", **data_attr("verdict", v.kind)),
        ]
    )


def arm_link(ds: int, arm: Mapping[str, Any], label: str) -> Any:
    """The arm's name; a selection arm links to Explore with its region drawn."""
    if arm.get("kind") == "selection" and arm.get("source_id"):
        return dcc.Link(
            label, href=explore_href(ds, int(arm["source_id"])), title="open this selection on the plane",
            className="xp-arm-link",
        )  # fmt: skip
    return html.Span(label)


def verdict_table(exp: Experiment, points: list[ArmPoint]) -> Any:
    """Per arm: its mean [CI], its control's, and the delta [CI] with its verdict."""
    arms = {int(a["id"]): a for a in exp.get("arms") or []}
    by_arm = {p.arm_id: p for p in points}
    control_of = {int(c): int(a["id"]) for a in arms.values() if (c := a.get("control_of")) is not None}
    ds = int(exp.get("dataset_id") or 0)
    rows = []
    for p in points:
        if p.control:
            continue
        has_control = p.arm_id in control_of
        ctrl = by_arm.get(control_of.get(p.arm_id, -1))
        control_text = mean_ci(ctrl.mean, ctrl.ci) if ctrl else ("no result yet" if has_control else "no control")
        rows.append(
            html.Tr(
                [
                    html.Td(arm_link(ds, arms[p.arm_id], p.label)),
                    html.Td(f"{int(arms[p.arm_id].get('n') or 0):,}", className="num"),
                    html.Td(mean_ci(p.mean, p.ci)),
                    html.Td(control_text),
                    delta_cell(p.delta) if has_control else html.Td("\u2013"),
                ],
                className="xp-verdict-row",
            )
        )
    return html.Table(
        [
            html.Thead(
                html.Tr(
                    [
                        html.Th("arm"),
                        html.Th("samples", className="num"),
                        html.Th("arm: mean [95% CI]"),
                        html.Th("random control: mean [95% CI]"),
                        html.Th("Δ vs control [bootstrap 95% CI]"),
                    ]
                )
            ),
            html.Tbody(rows),
        ],
        className="table compact xp-verdicts",
    )


def by_type_table(exp: Experiment, suite: str, metric: str) -> Any:
    """Per item type: each arm's mean [CI] and its delta [CI] against its control; None when no type."""
    arms = {int(a["id"]): a for a in exp.get("arms") or []}
    results = [
        r
        for r in exp.get("results") or []
        if r.get("suite") == suite and r.get("metric") == metric and r.get("by_type")
    ]
    treated = [r for r in results if arms.get(int(r["arm_id"]), {}).get("kind") != "control"]
    if not treated:
        return None
    types = sorted({t for r in treated for t in r.get("by_type") or {}})
    head = html.Tr([html.Th("item type"), *[html.Th(short_arm_label(arms[int(r["arm_id"])], arms)) for r in treated]])
    rows = []
    for t in types:
        cells = []
        for r in treated:
            level = (r.get("by_type") or {}).get(t)
            if not level:
                cells.append(html.Td("\u2013"))
                continue
            v = verdict(level.get("delta"), metric)
            cells.append(
                html.Td(
                    [
                        html.Div(mean_ci(finite(level.get("mean")), ci_bounds(level.get("ci")))),
                        html.Div(
                            [html.Span("Δ " + v.text), html.Span(" · " + v.label, className=f"xp-verdict-{v.kind}")]
                            if v
                            else "no delta yet",
                            className="small",
                        ),
                    ]
                )
            )
        rows.append(html.Tr([html.Td(t), *cells]))
    return html.Details(
        [
            html.Summary(f"per item type ({len(types)})"),
            html.Table([html.Thead(head), html.Tbody(rows)], className="table compact xp-by-type"),
        ],
        className="xp-by-type-wrap",
        open=True,
    )


def contrasts_table(exp: Experiment) -> Any:
    """Every two non-control arms: a minus b with its bootstrap CI (None when there is one arm)."""
    contrasts = exp.get("contrasts") or []
    if not contrasts:
        return None
    arms = {int(a["id"]): a for a in exp.get("arms") or []}
    rows = []
    for c in contrasts:
        v = verdict(c, str(c.get("metric")), contrast=True)
        a, b = arms.get(int(c.get("arm_id") or 0)), arms.get(int(c.get("vs_arm_id") or 0))
        rows.append(
            html.Tr(
                [
                    html.Td(short_arm_label(a, arms) if a else str(c["arm_id"])),
                    html.Td(short_arm_label(b, arms) if b else str(c["vs_arm_id"])),
                    html.Td(f"{c.get('suite')} · {c.get('metric')}"),
                    delta_cell(v),
                ]
            )
        )
    return html.Div(
        [
            html.H3("Arms against each other", className="card-title"),
            html.Table(
                [
                    html.Thead(
                        html.Tr([html.Th("arm"), html.Th("minus"), html.Th("suite · metric"), html.Th("Δ [95% CI]")])
                    ),
                    html.Tbody(rows),
                ],
                className="table compact xp-contrasts",
            ),
        ],
        className="xp-contrasts-wrap",
    )


def results_view(exp: Experiment) -> list[Any]:
    """Per suite and metric: the arms beside their controls (error bars), the deltas with their CIs, the
    verdicts, the per-type breakdown; then the contrasts between arms."""
    pairs = suite_metrics(exp)
    if not pairs:
        note = (
            "No results: no job finished."
            if not is_active(exp)
            else "Results appear here as soon as an arm and its control have finished a seed."
        )
        return [html.P(note, className="hint")]
    out: list[Any] = []
    for suite, metric in pairs:
        points = arm_points(exp, suite, metric)
        out.append(
            html.Div(
                [
                    html.Div(
                        [
                            dcc.Graph(
                                figure=results_figure(points, suite, metric),
                                config=FIGURE_CONFIG,
                                className="xp-figure xp-arms-figure",
                            ),
                            dcc.Graph(
                                figure=delta_figure(points, metric),
                                config=FIGURE_CONFIG,
                                className="xp-figure xp-delta-figure",
                            ),
                        ],
                        className="xp-figures",
                    ),
                    verdict_table(exp, points),
                    by_type_table(exp, suite, metric),
                ],
                className="xp-result",
                **data_attr("suite", suite),
                **data_attr("metric", metric),
            )
        )
    contrasts = contrasts_table(exp)
    if contrasts is not None:
        out.append(contrasts)
    return out
