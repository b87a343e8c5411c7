"""Pydantic shape of a background job (DESIGN.md, "Jobs, tokens, backups"), as the jobs endpoints answer it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]


class JobOut(BaseModel):
    id: int
    kind: str = Field(description="what the job does: demo_models (the demo's tiny models, trained here), ...")
    status: JobStatus
    done: int = Field(description="units of work done so far")
    total: int = Field(description="units of work in all (0: not known yet)")
    unit: str = Field(description="what done and total count, e.g. step")
    error: str | None = Field(default=None, description="why it failed")
    result: dict[str, Any] | None = Field(default=None, description="what it produced, once done")
    dataset_id: int | None = Field(default=None, description="the dataset the work is for")
    message: str | None = Field(default=None, description="what it is doing now, in words")
    created_at: datetime
    updated_at: datetime


class IngestAccepted(BaseModel):
    """``POST /api/datasets``' answer (202): the ingest job; the dataset's id comes in the job's ``result``."""

    job: JobOut
    dataset_id: int | None = Field(default=None, description="always null here: see job.result.dataset_id")
