"""The quality plane: axes, points (Arrow or JSON), density, summary and metadata fields of a dataset."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Response

from backend import datasets as store
from backend.api.deps import Id, SessionDep, SpaceDep
from backend.space import density, open_plane, plane_arrow, plane_json, resolve_colour, summary
from backend.space import list_axes as axes_of

router = APIRouter(tags=["space"])

ARROW = "application/vnd.apache.arrow.stream"


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
) -> Response:
    """Every scored sample as a point: id, x, y, task-type code (Arrow IPC stream or JSON)."""
    plane = open_plane(session, space_store, ds, x, y, task_type)
    colour = resolve_colour(session, ds, color)
    if format == "arrow":
        codec = None if compression == "none" else compression
        return Response(plane_arrow(session, space_store, plane, colour, codec), media_type=ARROW)
    return Response(orjson.dumps(plane_json(session, space_store, plane, colour)), media_type="application/json")


@router.get("/datasets/{ds}/density")
def get_density(
    ds: Id,
    session: SessionDep,
    space_store: SpaceDep,
    x: str = "loss",
    y: str = "clip",
    bins: Annotated[int, Query(ge=2, le=512)] = 64,
    task_type: str | None = None,
) -> dict[str, Any]:
    """A bins x bins histogram of the plane (optionally of one task type, on the same grid)."""
    plane = open_plane(session, space_store, ds, x, y, task_type)
    return {**density(plane.space, bins, plane.mask), "axes": plane.axes}


@router.get("/datasets/{ds}/summary")
def get_summary(ds: Id, session: SessionDep, space_store: SpaceDep, x: str = "loss", y: str = "clip") -> dict[str, Any]:
    """Per-axis quantiles and per-task-type count, mean and quartiles on both axes."""
    plane = open_plane(session, space_store, ds, x, y)
    return {**summary(plane.space), "axes": plane.axes}


@router.get("/datasets/{ds}/metadata_fields")
def metadata_fields(
    ds: Id, session: SessionDep, space_store: SpaceDep, max_values: Annotated[int, Query(ge=1, le=200)] = 50
) -> dict[str, Any]:
    """Low-cardinality metadata fields (e.g. a defect label) and their values with counts."""
    store.get_dataset(session, ds)
    return space_store.metadata_fields(session, ds, max_values)
