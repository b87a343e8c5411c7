"""A saved selection opened on the plane (Explore's `?sel=ID`, e.g. from an experiment's arm): the axes it was
drawn on, its region outlined and counted, its task-type filter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from frontend.api_shapes import ApiError
from frontend.context import UiContext
from frontend.pages.explore.query import axis_scale


@dataclass(frozen=True)
class Opened:
    sel_id: int
    x: str
    y: str
    region: dict[str, Any]  # the region store's value: {region, label, source}
    task_types: list[str] | None


def _axis(recipe: Mapping[str, Any], key: str, options: set[str]) -> str | None:
    """The plane axis the recipe names (its resolved `RUN:METRIC` when the recipe used a shortcut), with its
    transform (`@log`, ...) when it had one."""
    resolved = ((recipe.get("resolved_axes") or {}).get(key) or {}).get("axis")
    for cand in (resolved, recipe.get(key)):
        if isinstance(cand, str) and cand.partition("@")[0] in options and axis_scale(cand) == cand.partition("@")[2]:
            return cand
    return None


def opened_selection(
    ctx: UiContext, ds: int, query: Mapping[str, str] | None, options: list[dict[str, str]]
) -> Opened | None:
    """The selection `?sel=` names, when it is one of `ds`'s and its axes are on offer; None otherwise (the page
    then opens as usual)."""
    raw = (query or {}).get("sel")
    if not raw or not str(raw).isdigit():
        return None
    try:
        sel = ctx.api.selection(int(raw))
    except ApiError:
        return None
    if int(sel.get("dataset_id", -1)) != ds:
        return None
    recipe = sel.get("recipe") or {}
    values = {o["value"] for o in options}
    x, y = _axis(recipe, "x", values), _axis(recipe, "y", values)
    if x is None or y is None:
        return None
    label = f"Saved #{sel['id']} {sel.get('name') or ''}".strip()
    if recipe.get("sample"):
        label += " (a random sample: its population is shown)"
    tasks = recipe.get("task_types")
    return Opened(
        sel_id=int(sel["id"]),
        x=x,
        y=y,
        region={"region": recipe.get("region") or {"type": "all"}, "label": label, "source": "saved"},
        task_types=[str(t) for t in tasks] if isinstance(tasks, list) else None,
    )
