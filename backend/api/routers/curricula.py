from __future__ import annotations

import os
import tempfile
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from backend import datasets as store
from backend import exports
from backend.api.deps import READ_ONLY, Id, SessionDep, SettingsDep, SpaceDep
from backend.models import Curriculum
from backend.schemas import CurriculumOut, StageOut
from backend.selections import CurriculumRequest, SelectionError, by_task_type, ids_from_bytes, plan_curriculum
from backend.selections import save_curriculum as save

router = APIRouter(tags=["curricula"])


def curriculum_out(session: SessionDep, space_store: SpaceDep, cur: Curriculum) -> CurriculumOut:
    stages = [
        StageOut(
            position=st.position,
            name=st.name,
            count=st.count,
            recipe=st.recipe,
            selection_id=st.selection_id,
            by_task_type=by_task_type(session, space_store, cur.dataset_id, ids_from_bytes(st.sample_ids)),
        )
        for st in cur.stages
    ]
    return CurriculumOut(
        id=cur.id,
        dataset_id=cur.dataset_id,
        name=cur.name,
        recipe=cur.recipe,
        stages=stages,
        count=sum(s.count for s in stages),
        created_at=cur.created_at,
        created_by=cur.created_by,
    )


@router.post("/datasets/{ds}/curricula", response_model=CurriculumOut, status_code=201)
def create_curriculum(ds: Id, body: CurriculumRequest, session: SessionDep, space_store: SpaceDep) -> CurriculumOut:
    """The paper's staged builder, or an ordered list of saved selections, saved as a curriculum."""
    dataset = store.get_dataset(session, ds)
    stages = plan_curriculum(session, space_store, ds, body)
    if all(len(s.ids) == 0 for s in stages):
        raise SelectionError("every stage is empty: no scored sample meets the first stage's thresholds")
    cur = save(session, space_store, dataset, body, stages)
    session.commit()
    return curriculum_out(session, space_store, cur)


@router.post("/datasets/{ds}/curricula/preview", openapi_extra=READ_ONLY)
def preview_curriculum(ds: Id, body: CurriculumRequest, session: SessionDep, space_store: SpaceDep) -> dict[str, Any]:
    """Stage thresholds and sizes of a builder recipe, without saving (for live stage sizes in the UI)."""
    store.get_dataset(session, ds)
    stages = plan_curriculum(session, space_store, ds, body)
    return {"stages": [{"name": s.name, "count": len(s.ids), "recipe": s.recipe} for s in stages]}


@router.get("/curricula/{cur}", response_model=CurriculumOut)
def get_curriculum(cur: Id, session: SessionDep, space_store: SpaceDep) -> CurriculumOut:
    row = session.get(Curriculum, cur)
    if row is None:
        raise store.NotFound(f"curriculum {cur} not found")
    return curriculum_out(session, space_store, row)


@router.get(
    "/curricula/{cur}/export", response_class=FileResponse, responses={200: {"content": {"application/zip": {}}}}
)
def export_curriculum(
    cur: Id, request: Request, session: SessionDep, settings: SettingsDep, space_store: SpaceDep
) -> FileResponse:
    """A zip: one LLaVA JSON per stage, JSONL/Parquet/ids per stage, and manifest.json."""
    if session.get(Curriculum, cur) is None:
        raise store.NotFound(f"curriculum {cur} not found")
    tmp_dir = settings.data_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=".zip", delete=False)  # noqa: SIM115
    with tmp:
        exports.write_curriculum_zip(request.app.state.session_factory, space_store, cur, tmp)
    return FileResponse(
        tmp.name,
        media_type="application/zip",
        filename=f"curriculum-{cur}.zip",
        background=BackgroundTask(os.unlink, tmp.name),
    )
