"""How the plane and the data map colour their points: by task type, a categorical metadata field, a metric's value,
or a clusters run's `cluster` (categories, named by the run's labels when it has them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy.typing as npt

from frontend.api_shapes import ApiError, Points
from frontend.context import UiContext
from frontend.figures.overlay import MAX_CLUSTER_CATEGORIES, cluster_categories
from frontend.pages.axes import short_label

Select = Callable[[npt.NDArray[Any]], npt.NDArray[Any]]


def cluster_run(color: str | None) -> int | None:
    """The clusters run a colour choice names ('metric:12:cluster' -> 12), else None."""
    if not color or not color.startswith("metric:"):
        return None
    run, _, metric = color.removeprefix("metric:").partition(":")
    return int(run) if run.isdigit() and metric == "cluster" else None


def cluster_labels(ctx: UiContext, run: int, scratch: dict[str, Any]) -> list[str]:
    """The run's cluster labels (`GET /runs/{run}/clusters`), once per cached plane; [] when it has none."""
    key = f"cluster_labels:{run}"
    if key not in scratch:
        try:
            summary = ctx.api.cluster_summary(run)
            scratch[key] = [str(c.get("label") or "") for c in summary.get("clusters") or []]
        except ApiError:
            scratch[key] = []  # colours without names are still colours
    labels: list[str] = scratch[key]
    return labels


def colour_kwargs(
    points: Points,
    color: str | None,
    labels: dict[str, str],
    sel: Select,
    cluster_names: list[str] | None = None,
) -> dict[str, Any]:
    """The colour keywords of `plane_figure` for a colour choice (`sel` keeps the points the filters keep)."""
    if color == "task_type":
        return {"codes": sel(points.task_type), "categories": points.task_types}
    if points.color is None:
        return {}
    if points.color_categories is not None:
        return {"codes": sel(points.color), "categories": points.color_categories}
    if cluster_run(color) is not None:
        codes, names = cluster_categories(points.color, cluster_names)
        if 0 < len(names) <= MAX_CLUSTER_CATEGORIES:
            return {"codes": sel(codes), "categories": names}
    metric = (color or "").removeprefix("metric:")
    return {"values": sel(points.color), "value_label": short_label(labels.get(metric, metric))}
