"""Pydantic shapes of the scorer and run endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal["queued", "running", "done", "failed", "cancelled"]


class ScorerOut(BaseModel):
    kind: str
    params_schema: dict[str, Any]
    metrics: list[str]
    optional_metrics: dict[str, list[str]] = Field(
        default_factory=dict, description="param -> the metrics a run stores besides `metrics` when it is true"
    )
    main_metric: str
    needs_image: bool = False
    description: str = ""


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=64, description="scorer kind (GET /api/scorers)")
    params: dict[str, Any] = Field(default_factory=dict, description="scorer parameters, e.g. {model: ...}")


class RunOut(BaseModel):
    id: int
    dataset_id: int
    kind: str
    params: dict[str, Any]
    scorer_key: str
    status: RunStatus
    total: int
    done: int = Field(description="samples with a stored result (scored or failed)")
    errors: int = Field(description="samples that could not be scored (their reason is stored)")
    samples_per_s: float | None = Field(description="throughput over the recent window")
    eta_s: float | None = Field(description="seconds until done at the current rate (0 when done)")
    message: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    created_by: str | None = Field(default=None, description="the token that created it (\"env\": QSPACE_API_TOKEN)")


class RunErrorOut(BaseModel):
    sample_id: int
    external_id: str
    error: str


class RunErrorsPage(BaseModel):
    items: list[RunErrorOut]
    total: int
    offset: int
    limit: int
    reasons: dict[str, int] = Field(description="error count per reason (the text before the first ':')")
