"""The semantic view: a sample's nearest neighbours, text search, and a clusters run's clusters."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from backend import semantic as service
from backend.api.deps import Id, SessionDep, SettingsDep, SpaceDep
from backend.api.routers.runs import task_queue
from backend.datasets import get_dataset
from backend.queue import QueueUnavailable
from backend.runs import get_run

router = APIRouter(tags=["semantic"])

SEARCH_TIMEOUT_S = 20.0  # the worker may have to load the CLIP model on its first query


class Neighbour(BaseModel):
    id: int
    score: float


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: int = Field(ge=1, le=2_147_483_647, description="a clip run with keep_embeddings: true")
    text: str = Field(max_length=2000, description="the query, embedded by the run's CLIP text tower")
    k: int = Field(50, ge=1, le=service.MAX_K)
    source: Literal["image", "text", "both"] = Field("image", description="which embeddings to rank")


class SearchOut(BaseModel):
    items: list[Neighbour]


@router.get("/samples/{sample_id}/neighbours", response_model=list[Neighbour])
def neighbours(
    sample_id: Id,
    session: SessionDep,
    settings: SettingsDep,
    run: Annotated[int, Query(ge=1, le=2_147_483_647, description="a clip run with kept embeddings")],
    k: Annotated[int, Query(ge=1, le=service.MAX_K)] = 12,
    source: Literal["image", "text", "both"] = "image",
) -> list[dict[str, Any]]:
    """The `k` samples of the same dataset nearest to this one (cosine of their `source` embeddings)."""
    try:
        return service.neighbours(session, sample_id, run, k, source, settings.data_dir)
    except service.SemanticError as exc:
        raise HTTPException(422, str(exc)) from None


@router.post("/datasets/{ds}/search", response_model=SearchOut)
def search(ds: Id, body: SearchRequest, request: Request, session: SessionDep, settings: SettingsDep) -> SearchOut:
    """The samples nearest to a typed text: a worker embeds it with the run's CLIP text tower (a short task
    on the default queue; 504 when no worker answers within 20 s), the API ranks the kept embeddings."""
    text = body.text.strip()
    if not text:
        raise HTTPException(422, "text: the query is empty")
    dataset = get_dataset(session, ds)
    try:
        service.check_search(session, dataset.id, body.run, settings.data_dir)
    except service.SemanticError as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        vector = task_queue(request).embed_text(body.run, text, SEARCH_TIMEOUT_S)
    except QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    except TimeoutError as exc:
        raise HTTPException(504, f"text search: {exc}") from None
    try:
        items = service.search(session, dataset.id, body.run, vector, body.k, body.source, settings.data_dir)
    except service.SemanticError as exc:
        raise HTTPException(422, str(exc)) from None
    return SearchOut(items=[Neighbour(**i) for i in items])


@router.get("/runs/{run_id}/clusters")
def clusters(run_id: Id, session: SessionDep, settings: SettingsDep, space_store: SpaceDep) -> dict[str, Any]:
    """Per cluster of a finished clusters run: id, size, label (its answers' top TF-IDF words), a few example
    sample ids (nearest the centroid) and the median of each finished scoring run's main metric."""
    run = get_run(session, run_id)
    try:
        return service.cluster_summary(session, space_store, run, settings.data_dir)
    except service.SemanticError as exc:
        status = 409 if run.kind == "clusters" else 422
        raise HTTPException(status, str(exc)) from None
