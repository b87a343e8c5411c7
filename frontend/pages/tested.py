"""Which saved selections experiments have results for: Explore's saved list marks them (with the verdict of
their first delta, never without its CI) and links each to its experiment, and opens any of them on the plane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from dash import dcc, html

from frontend.api_shapes import ApiError, Experiment
from frontend.context import UiContext
from frontend.figures.experiments import verdict


@dataclass(frozen=True)
class Mark:
    """One experiment's result for a selection arm."""

    exp_id: int
    summary: str  # "mini · accuracy: Δ +0.05 [-0.02, +0.11], no evidence this selection beats random"
    kind: str  # better | worse | unclear | no delta


def selection_marks(experiments: Sequence[Experiment]) -> dict[int, list[Mark]]:
    """{selection id: its experiments that have results for it}, newest experiment first."""
    out: dict[int, list[Mark]] = {}
    for exp in sorted(experiments, key=lambda e: -int(e["id"])):
        results = exp.get("results") or []
        for arm in exp.get("arms") or []:
            source = arm.get("source_id")
            if arm.get("kind") != "selection" or not source:
                continue
            mine = [r for r in results if int(r.get("arm_id", -1)) == int(arm["id"])]
            if not mine:
                continue
            first = next((r for r in mine if r.get("delta")), mine[0])
            v = verdict(first.get("delta"), str(first.get("metric")))
            where = f"{first.get('suite')} · {first.get('metric')}"
            summary = f"{where}: Δ {v.text}, {v.label}" if v else f"{where}: no control to compare with"
            out.setdefault(int(source), []).append(Mark(int(exp["id"]), summary, v.kind if v else "no delta"))
    return out


def dataset_marks(ctx: UiContext, ds: int) -> dict[int, list[Mark]]:
    """The dataset's tested selections ({} from an API without experiments: the list works without marks)."""
    try:
        return selection_marks(ctx.api.experiments(ds))
    except ApiError:
        return {}


def saved_extras(ds: int, sel_id: int, marks: Mapping[int, list[Mark]]) -> html.Div:
    """Under a saved selection: 'open on the plane', and a mark per experiment with results for it."""
    items: list[Any] = [
        dcc.Link(
            "open on the plane",
            href=f"/explore?{urlencode({'ds': ds, 'sel': sel_id})}",
            className="btn btn-link",
            title="draw this selection's region on the plane it was drawn on",
        )
    ]
    for t in marks.get(sel_id, []):
        items.append(
            dcc.Link(
                f"experiment #{t.exp_id}: results",
                href=f"/experiments?{urlencode({'ds': ds, 'exp': t.exp_id})}",
                className=f"tested-mark tested-{t.kind.replace(' ', '-')}",
                title=t.summary,
                id={"type": "tested-mark", "sel": sel_id, "exp": t.exp_id},
            )
        )
    return html.Div(items, className="saved-extras")
