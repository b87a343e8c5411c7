"""The quality plane: axes, points (Arrow or JSON), density, summary and metadata fields of a dataset."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Response

from backend import datasets as store
from backend.api.deps import Id, SessionDep, SpaceDep
from backend.space import density, open_plane, plane_arrow, plane_json, resolve_colour, summary
from backend.space import list_axes as axes_of
from backend.space.plane import arrow_bytes, colour_values
from backend.space.sampling import Range, RangeError, parse_range, view

router = APIRouter(tags=["space"])

ARROW = "application/vnd.apache.arrow.stream"
RangeParam = Annotated[str | None, Query(description="lo,hi: only the points with lo <= value <= hi")]


def _ranges(x_range: str | None, y_range: str | None) -> tuple[Range | None, Range | None]:
    try:
        return parse_range("x_range", x_range), parse_range("y_range", y_range)
    except RangeError as e:
        raise HTTPException(422, str(e)) from None


@router.get("/datasets/{ds}/axes")
def list_axes(ds: Id, session: SessionDep) -> list[dict[str, Any]]:
    """Every metric of every run of the dataset, usable as an axis (`RUN:METRIC`)."""
    store.get_dataset(session, ds)
    return axes_of(session, ds)


@router.get(
    "/datasets/{ds}/space",
    responses={200: {"content": {ARROW: {}, "application/json": {}}}},
)
def get_space(
    ds: Id,
    session: SessionDep,
    space_store: SpaceDep,
    x: str = "loss",
    y: str = "clip",
    format: Literal["arrow", "json"] = "arrow",
    task_type: str | None = None,
    color: Annotated[str | None, Query(description="meta:FIELD or RUN:METRIC")] = None,
    compression: Annotated[Literal["zstd", "lz4", "none"], Query(description="Arrow buffer codec")] = "zstd",
    max_points: Annotated[
        int | None, Query(ge=1, description="send at most this many points: a density-aware sample of the view")
    ] = None,
    x_range: RangeParam = None,
    y_range: RangeParam = None,
    seed: Annotated[int, Query(ge=0, description="which sample max_points takes (the same seed, the same one)")] = 0,
) -> Response:
    """Every scored sample as a point: id, x, y, task-type code (Arrow IPC stream or JSON).

    With `x_range` / `y_range`, only the points in view; with `max_points`, at most that many of them, sampled
    density-aware (every point of sparse regions, dense ones thinned evenly). The header `X-Total-In-View`
    (and `total_in_view`, `sampled` in the Arrow metadata or the JSON) says how many points the view holds."""
    rx, ry = _ranges(x_range, y_range)
    plane = open_plane(session, space_store, ds, x, y, task_type)
    colour = resolve_colour(session, ds, color)
    codec = None if compression == "none" else compression
    if max_points is None and rx is None and ry is None:  # the whole plane, its payload cached
        total = {"X-Total-In-View": str(len(plane.space.ids) if plane.mask is None else int(plane.mask.sum()))}
        if format == "arrow":
            return Response(plane_arrow(session, space_store, plane, colour, codec), media_type=ARROW, headers=total)
        body = orjson.dumps(plane_json(session, space_store, plane, colour))
        return Response(body, media_type="application/json", headers=total)
    shown = view(plane.space, plane.mask, rx, ry, max_points, seed)
    about = {"total_in_view": shown.total, "sampled": shown.sampled, "x_range": rx, "y_range": ry}
    headers = {"X-Total-In-View": str(shown.total), "X-Sampled": "true" if shown.sampled else "false"}
    if shown.mask is not None:
        plane = replace(plane, mask=shown.mask)
    if format == "arrow":
        values, categories = colour_values(session, space_store, plane, colour)
        meta = {"axes": plane.axes, **about}
        body = arrow_bytes(plane.space, plane.mask, values, categories, meta, compression=codec)
        return Response(body, media_type=ARROW, headers=headers)
    payload = {**plane_json(session, space_store, plane, colour), **about}
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


@router.get("/datasets/{ds}/density")
def get_density(
    ds: Id,
    session: SessionDep,
    space_store: SpaceDep,
    x: str = "loss",
    y: str = "clip",
    bins: Annotated[int, Query(ge=2, le=512)] = 64,
    task_type: str | None = None,
    x_range: RangeParam = None,
    y_range: RangeParam = None,
) -> dict[str, Any]:
    """A bins x bins histogram of the plane (optionally of one task type, on the same grid); with `x_range` /
    `y_range`, of that view (a zoomed plane gets its own grid; `total` counts the points in view)."""
    rx, ry = _ranges(x_range, y_range)
    plane = open_plane(session, space_store, ds, x, y, task_type)
    return {**density(plane.space, bins, plane.mask, rx, ry), "axes": plane.axes}


@router.get("/datasets/{ds}/summary")
def get_summary(ds: Id, session: SessionDep, space_store: SpaceDep, x: str = "loss", y: str = "clip") -> dict[str, Any]:
    """Per-axis quantiles and per-task-type count, mean and quartiles on both axes."""
    plane = open_plane(session, space_store, ds, x, y)
    # Quantiles of every point per axis and per task type: ~1.4 s at 10M, asked for on every explore page load.
    stats = space_store.cache.get_or_make(("summary", plane.space.key), lambda: summary(plane.space))
    return {**stats, "axes": plane.axes}


@router.get("/datasets/{ds}/metadata_fields")
def metadata_fields(
    ds: Id, session: SessionDep, space_store: SpaceDep, max_values: Annotated[int, Query(ge=1, le=200)] = 50
) -> dict[str, Any]:
    """Low-cardinality metadata fields (e.g. a defect label) and their values with counts."""
    store.get_dataset(session, ds)
    return space_store.metadata_fields(session, ds, max_values)
