from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Response
from sqlalchemy import text
from sqlalchemy.orm import Session

from backend import datasets as store
from backend.api.deps import Id, SessionDep, SpaceDep
from backend.space import align, arrow_bytes, categorise, density, resolve_axis, summary
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
    store.get_dataset(session, ds)
    ax, ay = resolve_axis(session, ds, x), resolve_axis(session, ds, y)
    sp = space_store.space(session, ds, ax, ay)
    mask = None
    if task_type:
        if task_type not in sp.task_types:
            raise HTTPException(422, f"unknown task type {task_type!r}; this dataset has {sp.task_types}")
        mask = sp.task_codes == sp.task_types.index(task_type)
    colour, categories = None, None
    color_axis = None
    if color and not color.startswith("meta:"):
        color_axis = resolve_axis(session, ds, color)

    def colours() -> tuple[np.ndarray | None, list[str] | None]:
        if color and color.startswith("meta:"):
            mids, mvals = space_store.metadata_column(session, ds, color[5:])
            return categorise(list(align(sp.ids, mids, mvals, None)))
        if color_axis is not None:
            col = space_store.column(session, color_axis)
            return align(sp.ids, col.ids, col.values, np.nan).astype(np.float64), None
        return None, None

    axes = {"x": ax.as_dict(), "y": ay.as_dict()}
    if format == "arrow":
        codec = None if compression == "none" else compression

        def encode() -> bytes:
            c, cats = colours()
            return arrow_bytes(sp, mask, c, cats, {"axes": axes}, compression=codec)

        if color_axis is None:
            # The encoded payload is what every viewer of this plane downloads: keep it with the arrays.
            body = space_store.cache.get_or_make(("arrow", sp.key, task_type, color, codec), encode)
        else:
            body = encode()
        return Response(body, media_type=ARROW)
    colour, categories = colours()
    sel = slice(None) if mask is None else mask
    payload: dict[str, Any] = {
        "ids": sp.ids[sel].tolist(),
        "x": sp.x[sel].astype(np.float32).tolist(),
        "y": sp.y[sel].astype(np.float32).tolist(),
        "task_type": sp.task_codes[sel].tolist(),
        "task_types": sp.task_types,
        "axes": axes,
    }
    if colour is not None:
        payload["color"] = (
            colour[sel].tolist() if categories else [None if not np.isfinite(v) else float(v) for v in colour[sel]]
        )
        if categories is not None:
            payload["categories"] = categories
    import orjson

    return Response(orjson.dumps(payload), media_type="application/json")


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
    store.get_dataset(session, ds)
    ax, ay = resolve_axis(session, ds, x), resolve_axis(session, ds, y)
    sp = space_store.space(session, ds, ax, ay)
    mask = None
    if task_type:
        if task_type not in sp.task_types:
            raise HTTPException(422, f"unknown task type {task_type!r}; this dataset has {sp.task_types}")
        mask = sp.task_codes == sp.task_types.index(task_type)
    return {**density(sp, bins, mask), "axes": {"x": ax.as_dict(), "y": ay.as_dict()}}


@router.get("/datasets/{ds}/summary")
def get_summary(ds: Id, session: SessionDep, space_store: SpaceDep, x: str = "loss", y: str = "clip") -> dict[str, Any]:
    """Per-axis quantiles and per-task-type count, mean and quartiles on both axes."""
    store.get_dataset(session, ds)
    ax, ay = resolve_axis(session, ds, x), resolve_axis(session, ds, y)
    sp = space_store.space(session, ds, ax, ay)
    return {**summary(sp), "axes": {"x": ax.as_dict(), "y": ay.as_dict()}}


@router.get("/datasets/{ds}/metadata_fields")
def metadata_fields(
    ds: Id, session: SessionDep, space_store: SpaceDep, max_values: Annotated[int, Query(ge=1, le=200)] = 50
) -> dict[str, Any]:
    """Low-cardinality metadata fields (e.g. a defect label) and their values with counts."""
    store.get_dataset(session, ds)
    # One scan per field over every sample (0.75 s at 1M): cached until the dataset changes.
    key = ("meta", space_store.dataset_stamp(session, ds), "__fields__", max_values)
    return space_store.cache.get_or_make(key, lambda: _metadata_fields(session, ds, max_values))


def _metadata_fields(session: Session, ds: int, max_values: int) -> dict[str, Any]:
    rows = session.execute(
        text("SELECT CAST(metadata AS TEXT) FROM samples WHERE dataset_id = :ds ORDER BY id LIMIT 2000"), {"ds": ds}
    ).all()
    import orjson

    keys: set[str] = set()
    for (raw,) in rows:
        meta = orjson.loads(raw) if raw else {}
        keys.update(k for k, v in meta.items() if isinstance(v, str | int | bool) or v is None)
    is_pg = session.get_bind().dialect.name == "postgresql"
    out: dict[str, Any] = {}
    for key in sorted(keys):
        expr = "metadata ->> :k" if is_pg else "json_extract(metadata, '$.' || :k)"
        k = key if key.replace("_", "").isalnum() else '"' + key.replace('"', '\\"') + '"'
        vals = session.execute(
            text(f"SELECT {expr} AS v, COUNT(*) FROM samples WHERE dataset_id = :ds GROUP BY v LIMIT :lim"),
            {"ds": ds, "k": k, "lim": max_values + 1},
        ).all()
        if len(vals) <= max_values:
            out[key] = {("(none)" if v is None else str(v)): int(n) for v, n in vals}
    return out
