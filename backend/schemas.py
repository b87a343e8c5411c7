"""Pydantic request and response shapes of the REST API (separate from the SQL models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")
MAX_PAGE = 1000  # items per page of samples


class Health(BaseModel):
    status: str
    version: str
    database: str
    schema_revision: str | None
    auth_required: bool = Field(default=False, description="requests need a bearer token (any configured)")


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    paths: list[str] = Field(min_length=1, max_length=1000, description="dataset files on the server")
    image_root: str | None = None
    task_type_field: str | None = None
    task_type_rules: list[dict[str, Any]] | dict[str, str] | None = Field(
        default=None, description='{"type": "regex"} or [{"task_type", "pattern", "prompt"?}]'
    )
    task_type_prompts: dict[str, str] | None = None
    task_type_from_file: bool | None = None
    dedupe: bool = False


class DatasetOut(BaseModel):
    id: int
    name: str
    n_samples: int
    task_types: dict[str, int]
    task_type_prompts: dict[str, str]
    image_root: str | None
    sources: list[str]
    created_at: datetime
    experiment_base_model: str | None = None
    created_by: str | None = Field(default=None, description="the token that created it (\"env\": QSPACE_API_TOKEN)")


class Turn(BaseModel):
    from_: str = Field(alias="from", serialization_alias="from")
    value: str

    model_config = ConfigDict(populate_by_name=True)


class ScoreOut(BaseModel):
    kind: str
    metrics: dict[str, float] | None
    error: str | None


class SampleOut(BaseModel):
    id: int
    dataset_id: int
    external_id: str
    image: str | list[str] | None
    conversations: list[dict[str, str]]
    task_type: str
    n_turns: int
    metadata: dict[str, Any]
    scores: dict[str, ScoreOut] = Field(default_factory=dict)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


class SelectionOut(BaseModel):
    id: int
    dataset_id: int
    name: str | None
    count: int
    recipe: dict[str, Any]
    by_task_type: dict[str, int]
    created_at: datetime
    created_by: str | None = Field(default=None, description="the token that created it (\"env\": QSPACE_API_TOKEN)")


class StageOut(BaseModel):
    position: int
    name: str
    count: int
    recipe: dict[str, Any]
    selection_id: int | None
    by_task_type: dict[str, int]


class CurriculumOut(BaseModel):
    id: int
    dataset_id: int
    name: str | None
    recipe: dict[str, Any]
    stages: list[StageOut]
    count: int
    created_at: datetime
    created_by: str | None = Field(default=None, description="the token that created it (\"env\": QSPACE_API_TOKEN)")


class ErrorOut(BaseModel):
    """Every 4xx/5xx body: `detail` says what is wrong and where."""

    model_config = ConfigDict(extra="allow")

    detail: str | list[Any] | dict[str, Any]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in (
        (401, "authentication required (a token is configured: QSPACE_API_TOKEN or `qspace token`)"),
        (403, "forbidden: wrong or revoked token, a scope too low, or a path outside the allowed roots"),
        (404, "no such dataset, sample, run, selection or curriculum"),
        (409, "conflict with the current state"),
        (413, "request body too large"),
        (422, "invalid request: the message names the field"),
        (503, "a service (broker, database) is unavailable"),
    )
}
