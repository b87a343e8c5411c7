from __future__ import annotations

import tempfile
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.orm import Session, defer
from starlette.background import BackgroundTask

from backend import datasets as store
from backend import exports
from backend.api.deps import READ_ONLY, Id, SessionDep, SettingsDep, SpaceDep
from backend.models import Selection
from backend.schemas import MAX_PAGE, ErrorOut, Page, SampleOut, SelectionOut
from backend.selection_compare import CompareError, CompareOut, compare_selections, parse_ids
from backend.selection_import import ImportRequest, SelectionImportOut, import_selection, parse_upload
from backend.selections import (
    PreviewRequest,
    SelectionRequest,
    by_task_type,
    ids_from_bytes,
    resolve_selection,
    save_selection,
    selection_counts,
)
from backend.selections import preview_selection as preview
from backend.space import SpaceStore

router = APIRouter(tags=["selections"])


def selection_out(sel: Selection, counts: dict[str, int]) -> SelectionOut:
    return SelectionOut(
        id=sel.id,
        dataset_id=sel.dataset_id,
        name=sel.name,
        count=sel.count,
        recipe=sel.recipe,
        by_task_type=counts,
        created_at=sel.created_at,
        created_by=sel.created_by,
    )


def get_selection_row(session: SessionDep, sel: Id) -> Selection:
    row = session.get(Selection, sel)
    if row is None:
        raise store.NotFound(f"selection {sel} not found")
    return row


@router.post("/datasets/{ds}/selections", response_model=SelectionOut, status_code=201)
def create_selection(ds: Id, body: SelectionRequest, session: SessionDep, space_store: SpaceDep) -> SelectionOut:
    """Resolve a recipe (region + filters + sampling) and save it with its sample ids."""
    dataset = store.get_dataset(session, ds)
    res = resolve_selection(session, space_store, ds, body)
    if len(res.ids) == 0:
        raise HTTPException(
            422, f"the selection is empty: no sample of the {res.population} that pass the filters lies in the region"
        )
    sel = save_selection(session, dataset, body, res)
    session.commit()
    return selection_out(sel, res.by_task_type())


@router.post("/datasets/{ds}/selections/preview", openapi_extra=READ_ONLY)
def preview_selection(ds: Id, body: PreviewRequest, session: SessionDep, space_store: SpaceDep) -> dict[str, Any]:
    """Count, task-type shares and the first page of a recipe, without saving it (the lasso's round trip)."""
    store.get_dataset(session, ds)
    return preview(session, space_store, ds, body)


@router.get("/datasets/{ds}/selections", response_model=list[SelectionOut])
def list_selections(ds: Id, session: SessionDep, space_store: SpaceDep) -> list[SelectionOut]:
    """The dataset's saved selections, newest first."""
    store.get_dataset(session, ds)
    # The id lists stay in the database (tens of MB at 10M samples): the counts are kept with each selection.
    query = session.query(Selection).options(defer(Selection.sample_ids)).filter(Selection.dataset_id == ds)
    return [selection_out(r, selection_counts(session, space_store, r)) for r in query.order_by(Selection.id.desc())]


@router.post("/datasets/{ds}/selections/import", response_model=SelectionImportOut, status_code=201)
def import_subset(ds: Id, body: ImportRequest, session: SessionDep, space_store: SpaceDep) -> SelectionImportOut:
    """Save a subset made elsewhere (external ids, or LLaVA records matched by id or content) as a selection."""
    return _imported(session, space_store, ds, body)


@router.post("/datasets/{ds}/selections/import/file", response_model=SelectionImportOut, status_code=201)
def import_subset_file(
    ds: Id,
    session: SessionDep,
    space_store: SpaceDep,
    file: Annotated[UploadFile, File(description="one id per line, a JSON list (ids or LLaVA records), or Parquet")],
    name: Annotated[str | None, Form(max_length=200)] = None,
    format: Annotated[Literal["auto", "text", "json", "parquet"], Form()] = "auto",
) -> SelectionImportOut:
    """The same import from an uploaded file (its kind told by `format`, or by its first bytes)."""
    store.get_dataset(session, ds)
    return _imported(session, space_store, ds, parse_upload(file.file.read(), name, format))


def _imported(session: Session, space_store: SpaceStore, ds: int, body: ImportRequest) -> SelectionImportOut:
    dataset = store.get_dataset(session, ds)
    sel, m = import_selection(session, dataset, body)
    sel.task_type_counts = by_task_type(session, space_store, ds, m.ids)
    session.commit()
    out = selection_out(sel, sel.task_type_counts)
    return SelectionImportOut(
        **out.model_dump(),
        matched=len(m.ids),
        unmatched=m.unmatched,
        unmatched_examples=m.examples,
        duplicates=m.duplicates,
        matched_by=m.matched_by,
    )


# Declared before /selections/{sel}: that route would otherwise take "compare" for an id (and answer 422).
@router.get(
    "/selections/compare",
    response_model=CompareOut,
    responses={400: {"model": ErrorOut, "description": "not 2-3 distinct ids, or ids of different datasets"}},
)
def compare(
    session: SessionDep,
    space_store: SpaceDep,
    ids: Annotated[str, Query(max_length=200, description="2 or 3 selection ids of one dataset, e.g. '4,7'")],
) -> dict[str, Any]:
    """Counts, task-type mix, every finished run's metrics (median, quartiles) and pairwise overlap."""
    try:
        return compare_selections(session, space_store, parse_ids(ids))
    except CompareError as exc:
        raise HTTPException(400, str(exc)) from exc


@router.get("/selections/{sel}", response_model=SelectionOut)
def get_selection(sel: Id, session: SessionDep, space_store: SpaceDep) -> SelectionOut:
    row = get_selection_row(session, sel)
    return selection_out(row, selection_counts(session, space_store, row))


@router.get("/selections/{sel}/samples", response_model=Page[SampleOut])
def selection_samples(
    sel: Id,
    session: SessionDep,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> Page[SampleOut]:
    row = get_selection_row(session, sel)
    ids = [int(i) for i in ids_from_bytes(row.sample_ids)[offset : offset + limit]]
    return Page(items=store.samples_by_id(session, ids), total=row.count, offset=offset, limit=limit)


@router.get(
    "/selections/{sel}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {m: {} for m in exports.MEDIA.values()}}},
)
def export_selection(
    sel: Id,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    space_store: SpaceDep,
    format: Literal["llava", "jsonl", "parquet", "ids"] = "llava",
) -> Any:
    """The selection's samples in one format, streamed (LLaVA JSON loads in LLaVA's training code)."""
    row = get_selection_row(session, sel)
    ids = ids_from_bytes(row.sample_ids)
    factory = request.app.state.session_factory
    name = f"selection-{row.id}.{exports.SUFFIX[format]}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "parquet":
        tmp_dir = settings.data_dir / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=".parquet", delete=False)  # noqa: SIM115
        with tmp:
            exports.write_parquet(factory, space_store, row.dataset_id, ids, tmp)
        path = tmp.name
        return FileResponse(
            path, media_type=exports.MEDIA[format], filename=name, background=BackgroundTask(_unlink, path)
        )
    it = (
        exports.iter_llava(factory, ids)
        if format == "llava"
        else exports.iter_jsonl(factory, space_store, row.dataset_id, ids)
        if format == "jsonl"
        else exports.iter_ids(factory, ids)
    )
    return StreamingResponse(it, media_type=exports.MEDIA[format], headers=headers)


def _unlink(path: str) -> None:
    import contextlib
    import os

    with contextlib.suppress(OSError):
        os.unlink(path)
