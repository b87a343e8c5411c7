"""An experiment's results drawn honestly: every arm beside its random control with 95% CI error bars over
seeds, and each delta only with its bootstrap CI; the training loss of its jobs. Plain data in, plain data or
Plotly figures out (no I/O, no Dash).

The rule the results view keeps: **no delta without its CI**. `verdict` answers None for a delta whose CI is
missing, and the figures leave such a delta out; a CI that includes 0 reads "no evidence this selection beats
random", whichever way its mean points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go

from frontend.figures.style import FONT, NEUTRAL, PALETTE

# Metrics where less is better (a loss); every other metric (accuracy...) is better when higher.
LOWER_IS_BETTER = frozenset({"answer_loss", "loss", "perplexity"})
NO_EVIDENCE = "no evidence this selection beats random"
NO_EVIDENCE_CONTRAST = "no evidence either arm is better"
TREATED_COLOR = "#3B82C4"
CONTROL_COLOR = NEUTRAL
BETTER_COLOR = "#1B8A4B"
WORSE_COLOR = "#C2412D"
UNCLEAR_COLOR = "#6B7280"


def finite(v: Any) -> float | None:
    """`v` as a finite float; None when it is missing or not a number (JSON has no NaN: the API sends null)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def ci_bounds(ci: Any) -> tuple[float, float] | None:
    """(lo, hi) of a CI as the API sends it ([lo, hi]); None unless both ends are finite numbers."""
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return None
    lo, hi = finite(ci[0]), finite(ci[1])
    if lo is None or hi is None:
        return None
    return (min(lo, hi), max(lo, hi))


def fmt_value(v: float | None, signed: bool = False) -> str:
    """3 significant digits ('+0.050' with `signed`); an en dash for a missing value."""
    if v is None:
        return "\u2013"
    if v == 0:
        return "0"
    text = f"{v:+.3g}" if signed else f"{v:.3g}"
    return text.replace("-", "\u2212")  # a true minus sign


def fmt_ci(lo: float, hi: float, signed: bool = False) -> str:
    return f"[{fmt_value(lo, signed)}, {fmt_value(hi, signed)}]"


@dataclass(frozen=True)
class Verdict:
    """A delta in words: its mean with the 95% CI ('+0.050 [-0.020, +0.110]', true minus signs) and its meaning."""

    mean: float
    lo: float
    hi: float
    includes_zero: bool
    better: bool | None  # None: the CI includes 0
    label: str

    @property
    def text(self) -> str:
        return f"{fmt_value(self.mean, True)} {fmt_ci(self.lo, self.hi, True)}"

    @property
    def kind(self) -> str:
        return "unclear" if self.better is None else ("better" if self.better else "worse")


def verdict(delta: Mapping[str, Any] | None, metric: str, contrast: bool = False) -> Verdict | None:
    """What a delta (arm minus its control, or minus another arm when `contrast`) says; None when the delta or
    either end of its CI is missing, so nobody shows a delta without its CI."""
    if not delta:
        return None
    mean = finite(delta.get("mean"))
    bounds = ci_bounds(delta.get("ci"))
    if mean is None or bounds is None:
        return None
    lo, hi = bounds
    flag = delta.get("ci_includes_zero")
    includes_zero = bool(flag) if isinstance(flag, bool) else lo <= 0.0 <= hi
    if includes_zero:
        return Verdict(mean, lo, hi, True, None, NO_EVIDENCE_CONTRAST if contrast else NO_EVIDENCE)
    better = (mean < 0) if metric in LOWER_IS_BETTER else (mean > 0)
    if contrast:
        label = "better than the other arm" if better else "worse than the other arm"
    else:
        label = "beats random (95% CI excludes 0)" if better else "worse than random (95% CI excludes 0)"
    return Verdict(mean, lo, hi, False, better, label)


# --- arms beside their controls ----------------------------------------------------------------------------


@dataclass
class ArmPoint:
    """One arm's metric for the figure: mean, CI (None when missing), per-seed values."""

    arm_id: int
    label: str
    control: bool
    mean: float | None
    ci: tuple[float, float] | None
    per_seed: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    delta: Verdict | None = None
    tick: str = ""  # the figures' axis label: short, on two lines

    def __post_init__(self) -> None:
        self.tick = self.tick or self.label


def short_arm_label(arm: Mapping[str, Any], arms_by_id: Mapping[int, Mapping[str, Any]]) -> str:
    """'selection #3 top' / 'control of #3': short enough for an axis tick."""
    if arm.get("kind") == "control":
        of = arms_by_id.get(int(arm.get("control_of") or 0))
        return f"random control of {short_arm_label(of, arms_by_id)}" if of else "random control"
    label = str(arm.get("label") or "")
    name = label[label.find("(") + 1 : -1] if label.endswith(")") and "(" in label else ""
    base = f"{arm.get('kind', 'arm')} #{arm.get('source_id')}"
    return f"{base} {name}".strip() if len(name) <= 28 else f"{base} {name[:27]}\u2026"


def tick_label(arm: Mapping[str, Any], arms_by_id: Mapping[int, Mapping[str, Any]]) -> str:
    """'selection #3<br>DIQ top' / 'random control<br>of selection #3': an axis tick on two short lines."""
    if arm.get("kind") == "control":
        of = arms_by_id.get(int(arm.get("control_of") or 0)) or {}
        return f"random control<br>of {of.get('kind', 'arm')} #{of.get('source_id')}"
    label = str(arm.get("label") or "")
    name = label[label.find("(") + 1 : -1] if label.endswith(")") and "(" in label else ""
    short = name if len(name) <= 20 else f"{name[:19]}\u2026"
    return f"{arm.get('kind', 'arm')} #{arm.get('source_id')}" + (f"<br>{short}" if short else "")


def arm_points(experiment: Mapping[str, Any], suite: str, metric: str) -> list[ArmPoint]:
    """Each arm with a result for (suite, metric), each control right after the arm it controls."""
    arms = list(experiment.get("arms") or [])
    by_id = {int(a["id"]): a for a in arms}
    results = {
        int(r["arm_id"]): r
        for r in experiment.get("results") or []
        if r.get("suite") == suite and r.get("metric") == metric
    }
    order: list[Mapping[str, Any]] = []
    for arm in sorted(arms, key=lambda a: int(a.get("position", 0))):
        if arm.get("kind") == "control":
            continue
        order.append(arm)
        order += [c for c in arms if c.get("kind") == "control" and c.get("control_of") == arm.get("id")]
    out = []
    for arm in order:
        r = results.get(int(arm["id"]))
        if r is None:
            continue
        seeds = [int(s) for s in r.get("seeds") or []]
        per_seed = [finite(v) for v in r.get("per_seed") or []]
        kept = [(s, v) for s, v in zip(seeds, per_seed, strict=False) if v is not None]
        out.append(
            ArmPoint(
                arm_id=int(arm["id"]),
                label=short_arm_label(arm, by_id),
                control=arm.get("kind") == "control",
                mean=finite(r.get("mean")),
                ci=ci_bounds(r.get("ci")),
                per_seed=[v for _, v in kept],
                seeds=[s for s, _ in kept],
                delta=verdict(r.get("delta"), metric),
                tick=tick_label(arm, by_id),
            )
        )
    return out


def suite_metrics(experiment: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (suite, metric) with a result, in the experiment's order (suites as listed, metrics as they come)."""
    seen: dict[tuple[str, str], None] = {}
    for r in experiment.get("results") or []:
        seen.setdefault((str(r.get("suite")), str(r.get("metric"))), None)
    order = {str(s.get("name")): k for k, s in enumerate(experiment.get("eval_suites") or [])}
    return sorted(seen, key=lambda sm: (order.get(sm[0], 99), sm[0]))


def _layout(title: str, height: int) -> dict[str, Any]:
    return {
        "template": "none",
        "font": {"family": FONT, "size": 12, "color": "#3A4455"},
        "paper_bgcolor": "#FFFFFF",
        "plot_bgcolor": "#FFFFFF",
        "title": {"text": title, "font": {"size": 13}, "x": 0.0, "xanchor": "left"},
        "margin": {"l": 56, "r": 16, "t": 40, "b": 64},
        "height": height,
        "showlegend": False,
        "hovermode": "closest",
    }


def _error(points: Sequence[ArmPoint]) -> dict[str, Any]:
    """Asymmetric error bars from each point's CI (0 where the CI is missing: the hover says so)."""
    plus = [(p.ci[1] - p.mean) if p.ci and p.mean is not None else 0.0 for p in points]
    minus = [(p.mean - p.ci[0]) if p.ci and p.mean is not None else 0.0 for p in points]
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "thickness": 1.6, "width": 6}


def results_figure(points: Sequence[ArmPoint], suite: str, metric: str) -> go.Figure:
    """Each arm and its random control as a point with its 95% CI over seeds (error bars), and the seeds' own
    values as faint dots: treated arms in blue, controls in grey."""
    better = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    fig = go.Figure(layout=_layout(f"{suite} · {metric} ({better}): mean and 95% CI over seeds", 300))
    for control, color, name in ((False, TREATED_COLOR, "arm"), (True, CONTROL_COLOR, "random control")):
        group = [p for p in points if p.control == control and p.mean is not None]
        if not group:
            continue
        fig.add_trace(
            go.Scatter(
                x=[p.tick for p in group],
                y=[p.mean for p in group],
                mode="markers",
                name=name,
                marker={"size": 11, "color": color, "line": {"color": "#FFFFFF", "width": 1}},
                error_y={**_error(group), "color": color},
                customdata=[[fmt_ci(*p.ci) if p.ci else "CI unavailable", len(p.per_seed)] for p in group],
                hovertemplate="%{x}<br>mean %{y:.4g}<br>95% CI %{customdata[0]}<br>%{customdata[1]} seed(s)"
                "<extra></extra>",
            )
        )
        seeds_x = [p.tick for p in group for _ in p.per_seed]
        seeds_y = [v for p in group for v in p.per_seed]
        if seeds_y:
            fig.add_trace(
                go.Scatter(
                    x=seeds_x,
                    y=seeds_y,
                    mode="markers",
                    name=f"{name}: per seed",
                    marker={"size": 6, "color": color, "opacity": 0.35, "symbol": "circle-open"},
                    hovertemplate="%{x}<br>one seed: %{y:.4g}<extra></extra>",
                )
            )
    # each control right after its arm, whatever the order of the traces
    order = [p.tick for p in points if p.mean is not None]
    fig.update_xaxes(
        type="category", categoryorder="array", categoryarray=order, showline=True, linecolor="#CBD2DC",
        tickfont={"size": 11}, tickangle=0,
    )  # fmt: skip
    fig.update_yaxes(title={"text": metric}, gridcolor="#EEF1F5", zeroline=False)
    return fig


def delta_figure(points: Sequence[ArmPoint], metric: str) -> go.Figure:
    """Each arm's delta against its control with its bootstrap 95% CI, beside a line at 0: green when the CI
    shows the arm better, red when worse, grey when it includes 0. Deltas without a CI are left out."""
    shown = [p for p in points if not p.control and p.delta is not None]
    fig = go.Figure(layout=_layout("Δ vs random control: mean and bootstrap 95% CI", 300))
    fig.add_hline(y=0, line={"color": "#111827", "width": 1, "dash": "dot"})
    for kind, color in (("better", BETTER_COLOR), ("worse", WORSE_COLOR), ("unclear", UNCLEAR_COLOR)):
        group = [p for p in shown if p.delta is not None and p.delta.kind == kind]
        if not group:
            continue
        deltas = [p.delta for p in group if p.delta is not None]
        fig.add_trace(
            go.Scatter(
                x=[p.tick for p in group],
                y=[d.mean for d in deltas],
                mode="markers",
                name=kind,
                marker={"size": 11, "color": color, "symbol": "diamond"},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [d.hi - d.mean for d in deltas],
                    "arrayminus": [d.mean - d.lo for d in deltas],
                    "color": color,
                    "thickness": 1.6,
                    "width": 6,
                },
                customdata=[[d.text, d.label] for d in deltas],
                hovertemplate="%{x}<br>Δ %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
            )
        )
    fig.update_xaxes(type="category", showline=True, linecolor="#CBD2DC", tickfont={"size": 11}, tickangle=0)
    fig.update_yaxes(title={"text": f"Δ {metric}"}, gridcolor="#EEF1F5", zeroline=False)
    return fig


# --- training progress -------------------------------------------------------------------------------------


def merge_loss_history(
    history: Mapping[str, Sequence[Sequence[float]]] | None, jobs: Sequence[Mapping[str, Any]], keep: int = 400
) -> dict[str, list[list[float]]]:
    """`history` ({job id: [[step, loss], ...]}) with each job's current (step, loss) added when its step is new;
    at most `keep` points per job. The API keeps only a job's latest loss: the page collects the curve."""
    out = {str(k): [list(p) for p in v] for k, v in (history or {}).items()}
    for job in jobs:
        loss = finite(job.get("loss"))
        step = finite(job.get("step"))
        if loss is None or step is None or step <= 0:
            continue
        points = out.setdefault(str(job["id"]), [])
        if not points or step > points[-1][0]:
            points.append([step, loss])
            del points[:-keep]
    return out


def loss_figure(
    history: Mapping[str, Sequence[Sequence[float]]],
    job_labels: Mapping[str, str],
    job_groups: Mapping[str, str] | None = None,
    height: int = 220,
) -> go.Figure:
    """Training loss against the optimizer step, a line per job (a dot while a job has one point). Jobs of one
    group (an arm, over its seeds) share a colour and one legend entry; the hover names the job."""
    fig = go.Figure(layout=_layout("training loss per job (as seen while this page was open)", height))
    fig.update_layout(showlegend=True, legend={"font": {"size": 11}}, margin={"l": 48, "r": 8, "t": 36, "b": 36})
    groups = job_groups or {}
    colors: dict[str, str] = {}
    for job_id, points in sorted(history.items(), key=lambda kv: int(kv[0])):
        if not points:
            continue
        label = job_labels.get(job_id, f"job {job_id}")
        group = groups.get(job_id, label)
        first = group not in colors
        color = colors.setdefault(group, PALETTE[len(colors) % len(PALETTE)])
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="lines+markers" if len(points) < 3 else "lines",
                name=group,
                legendgroup=group,
                showlegend=first,
                line={"width": 1.6, "color": color},
                marker={"size": 5},
                hovertemplate=f"{label}<br>step %{{x}}: loss %{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_xaxes(title={"text": "step"}, gridcolor="#EEF1F5", zeroline=False)
    fig.update_yaxes(title={"text": "loss"}, gridcolor="#EEF1F5", zeroline=False)
    return fig
