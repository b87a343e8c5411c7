"""What Explore's controls ask of the API: the colour of /space, the body of a selection, a gallery page."""

from __future__ import annotations

from typing import Any

from frontend.api_shapes import ApiError, Points, SelectionPreview
from frontend.context import UiContext

# An axis's scale is a server-side transform (`AXIS@log`, ...): selections then keep what the plane draws.
SCALES = {"": "linear", "log": "log", "type_z": "z in type", "type_rank": "rank in type"}
PAGE_SIZE = 12  # gallery cards per page
MAX_PREVIEW = 200  # how far an API without preview offsets lets an unsaved selection page


def color_options(meta_fields: dict[str, list[Any]], axis_options: list[dict[str, str]]) -> list[dict[str, str]]:
    """The colour dropdown: task type, each categorical metadata field, each metric, or none."""
    opts = [{"label": "Task type", "value": "task_type"}]
    opts += [{"label": f"Metadata: {f}", "value": f"meta:{f}"} for f in meta_fields]
    opts += [{"label": f"Metric: {o['label']}", "value": f"metric:{o['value']}"} for o in axis_options]
    opts.append({"label": "None", "value": "none"})
    return opts


def axis_scale(axis: str | None) -> str:
    """'3:loss_sum@log' -> 'log'; '' for an untransformed axis (or a transform this page does not offer)."""
    scale = (axis or "").partition("@")[2]
    return scale if scale in SCALES else ""


def scaled_axis(axis: str, scale: str) -> str:
    """The axis with its transform replaced by `scale` ('' = none)."""
    base = axis.partition("@")[0]
    return f"{base}@{scale}" if scale else base


def axis_label(labels: dict[str, str], axis: str) -> str:
    """The label of an axis: its metric's, plus its scale."""
    base, _, scale = axis.partition("@")
    label = labels.get(base, base)
    return f"{label} · {SCALES.get(scale, scale)}" if scale else label


def scaled_options(options: list[dict[str, str]], scale: str) -> list[dict[str, str]]:
    """An axis dropdown's options with every axis under `scale`."""
    labels = {o["value"]: o["label"] for o in options}
    return [{"label": axis_label(labels, scaled_axis(o["value"], scale)),
             "value": scaled_axis(o["value"], scale)} for o in options]


def api_color(color: str | None) -> str | None:
    """The `color` query parameter of /space for a colour choice (None: task type or nothing)."""
    if not color or color in ("task_type", "none"):
        return None
    if color.startswith("meta:"):
        return color
    if color.startswith("metric:"):
        return color.removeprefix("metric:")
    return None


def points_for(
    ctx: UiContext, setup: dict[str, Any], x: str, y: str, color: str | None
) -> tuple[Points, dict[str, Any]]:
    """The plane for the page's axes and colour, and its scratch dict (both cached, see PointsCache)."""
    return ctx.points.entry(int(setup["ds"]), x, y, api_color(color))


def selection_body(
    setup: dict[str, Any],
    x: str,
    y: str,
    region: Any,
    tasks: list[str] | None,
    color: str | None,
    meta_values: list[Any] | None,
) -> dict[str, Any]:
    """The body of a selection preview or save for the page's state: the region, the task-type filter and
    the kept values of a metadata colour (a filter that keeps everything is left out)."""
    # A region drawn on the data map carries the map's axes: the recipe resolves the polygon on those.
    drawn_on = (region or {}).get("axes") or {}
    body: dict[str, Any] = {
        "x": drawn_on.get("x") or x,
        "y": drawn_on.get("y") or y,
        "region": (region or {}).get("region") or {"type": "all"},
    }
    all_types = setup.get("task_types") or []
    if tasks is not None and set(tasks) != set(all_types):
        body["task_types"] = list(tasks)
    if color and color.startswith("meta:") and meta_values is not None:
        field = color.removeprefix("meta:")
        values = (setup.get("meta_fields") or {}).get(field) or []
        if {str(v) for v in meta_values} != {str(v) for v in values}:
            body["metadata"] = {field: [v for v in values if str(v) in {str(m) for m in meta_values}]}
    return body


def preview_page(ctx: UiContext, ds: int, body: dict[str, Any], page: int, token: str | None) -> SelectionPreview:
    """One gallery page of an unsaved selection (count and shares always cover the whole selection)."""
    if page <= 0:
        return ctx.api.preview(ds, body, limit=PAGE_SIZE, token=token)
    try:
        return ctx.api.preview(ds, body, limit=PAGE_SIZE, offset=page * PAGE_SIZE, token=token)
    except ApiError as exc:
        if exc.status != 422 or "offset" not in exc.message:
            raise
    # An API whose preview has no offset: ask for the first pages and keep the last one.
    need = (page + 1) * PAGE_SIZE
    if need > MAX_PREVIEW:
        raise ApiError(
            f"Unsaved selections page up to {MAX_PREVIEW} samples here; save the selection to browse "
            "all of it (or download it)."
        )
    prev = ctx.api.preview(ds, body, limit=need, token=token)
    prev["items"] = (prev.get("items") or [])[page * PAGE_SIZE :]
    return prev
