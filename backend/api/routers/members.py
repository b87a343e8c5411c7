"""Which samples a selection holds, as plane point ids: what a view needs to highlight a selection among the points
of `/space` (whose `id` column is the same sample id), for a saved selection or for a recipe not saved yet.

A selection's exports name samples by their dataset ids (`export?format=ids`, the source records' `id`), which a
plane does not carry; its `/samples` pages carry whole samples. These answer only the int32 ids, once: an Arrow IPC
stream with one `id` column (4 bytes a sample), or JSON `{count, ids}`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
from fastapi import APIRouter, Response

from backend import datasets as store
from backend.api.deps import READ_ONLY, Id, SessionDep, SpaceDep
from backend.models import Selection
from backend.selection_combine import stored_ids
from backend.selections import SelectionRequest, resolve_selection

router = APIRouter(tags=["selections"])

ARROW = "application/vnd.apache.arrow.stream"
Format = Literal["arrow", "json"]
_ANSWERS: dict[int | str, dict[str, Any]] = {200: {"content": {ARROW: {}, "application/json": {}}}}


def members_response(ids: npt.NDArray[np.int32], fmt: Format) -> Response:
    """Sorted sample ids as an Arrow stream (column `id` int32, metadata `count`) or JSON `{count, ids}`."""
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    if fmt == "json":
        return Response(orjson.dumps({"count": int(ids.size), "ids": ids.tolist()}), media_type="application/json")
    table = pa.table({"id": pa.array(ids, type=pa.int32())}).replace_schema_metadata({"count": str(int(ids.size))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return Response(sink.getvalue().to_pybytes(), media_type=ARROW)


@router.get("/selections/{sel}/members", responses=_ANSWERS)
def selection_members(sel: Id, session: SessionDep, format: Format = "arrow") -> Response:
    """The sample ids a saved selection holds, sorted (the `id`s of `/space` points)."""
    row = session.get(Selection, sel)
    if row is None:
        raise store.NotFound(f"selection {sel} not found")
    return members_response(stored_ids(row), format)


@router.post("/datasets/{ds}/selections/members", responses=_ANSWERS, openapi_extra=READ_ONLY)
def recipe_members(
    ds: Id, body: SelectionRequest, session: SessionDep, space_store: SpaceDep, format: Format = "arrow"
) -> Response:
    """The sample ids a recipe selects, sorted, without saving it: the same membership as its preview and its
    save (a lasso on any two axes of the dataset, filters, sampling), all of them rather than one page."""
    store.get_dataset(session, ds)
    return members_response(resolve_selection(session, space_store, ds, body).ids, format)
