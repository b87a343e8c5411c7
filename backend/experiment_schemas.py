"""Pydantic shapes of the experiment and eval-suite endpoints (DESIGN.md, "Experiments": fields may be added,
never renamed)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ExperimentStatus = Literal["queued", "running", "done", "failed", "cancelled"]
JobStatus = ExperimentStatus
ArmKind = Literal["selection", "curriculum", "control"]

MAX_SEED = 2**31 - 1
DbId = Field(ge=1, le=2_147_483_647)


class ArmRef(BaseModel):
    """One arm: a saved selection or a saved curriculum of the experiment's dataset."""

    model_config = ConfigDict(extra="forbid")

    selection: int | None = Field(default=None, ge=1, le=2_147_483_647)
    curriculum: int | None = Field(default=None, ge=1, le=2_147_483_647)

    @model_validator(mode="after")
    def _one(self) -> ArmRef:
        if (self.selection is None) == (self.curriculum is None):
            raise ValueError("an arm is {selection: ID} or {curriculum: ID}")
        return self

    @property
    def kind(self) -> Literal["selection", "curriculum"]:
        return "selection" if self.selection is not None else "curriculum"

    @property
    def source_id(self) -> int:
        value = self.selection if self.selection is not None else self.curriculum
        assert value is not None
        return value


class EvalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suites: list[str] = Field(min_length=1, max_length=20, description="suite names (GET /api/eval_suites)")

    @field_validator("suites")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a suite is listed twice")
        return value


class ExperimentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    base_model: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="local LLaVA-style checkpoint folder or hub name org/name; default: the dataset's "
        "experiment_base_model",
    )
    arms: list[ArmRef] = Field(min_length=1, max_length=20)
    seeds: list[int] = Field(default=[0, 1, 2], min_length=1, max_length=10, description="0 <= seed < 2**31")
    control: Literal["random", "none"] = Field(
        default="random", description="'random': every arm gets an equal-size random control arm, drawn per seed"
    )
    control_task_mix: bool = Field(default=False, description="controls match their arm's task-type mix")
    train: dict[str, Any] = Field(
        default_factory=lambda: {"preset": "quick"}, description="{preset: quick | paper_lora, ...overrides}"
    )
    eval: EvalRequest

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        bad = [s for s in value if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"seeds must be in [0, 2**31), got {bad[0]}")
        if len(set(value)) != len(value):
            raise ValueError("seeds must be unique")
        return value

    @field_validator("arms")
    @classmethod
    def _arms(cls, value: list[ArmRef]) -> list[ArmRef]:
        keys = [(a.kind, a.source_id) for a in value]
        if len(set(keys)) != len(keys):
            raise ValueError("an arm is listed twice")
        return value


class DatasetPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment_base_model: str | None = Field(
        min_length=1, max_length=1000, description="default base model of this dataset's experiments (null clears)"
    )


class EvalSuiteOut(BaseModel):
    name: str
    path: str
    n_items: int
    metrics: list[str]
    types: list[str] = Field(default_factory=list, description="item types (per-type figures)")
    digest: str | None = None
    error: str | None = Field(default=None, description="why the suite cannot be used (file:line: field: why)")


class ArmOut(BaseModel):
    id: int
    kind: ArmKind
    source_id: int | None
    control_of: int | None
    n: int
    position: int
    stage_sizes: list[int]
    label: str


class JobOut(BaseModel):
    id: int
    arm_id: int
    seed: int
    status: JobStatus
    step: int
    total_steps: int
    loss: float | None
    samples_per_s: float | None
    eta_s: float | None
    error: str | None
    phase: str | None = None
    attempts: int = 0
    model_dir: str | None = Field(default=None, description="the trained model (a plain checkpoint folder)")
    adapter_dir: str | None = Field(default=None, description="LoRA: the trained adapter (and projector)")
    output_dir: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None


class DeltaOut(BaseModel):
    vs_arm_id: int | None
    mean: float | None
    ci: list[float | None]
    ci_includes_zero: bool | None = None
    seeds: list[int] = Field(default_factory=list)
    n_items: int = 0
    n_boot: int = 0
    method: str = "paired_bootstrap_items_and_seeds"


class LevelOut(BaseModel):
    mean: float | None
    ci: list[float | None]
    ci_method: str
    per_seed: list[float | None]
    seeds: list[int]
    n_items: int
    delta: DeltaOut | None = None


class ResultOut(LevelOut):
    arm_id: int
    suite: str
    metric: str
    by_type: dict[str, LevelOut] = Field(default_factory=dict)


class ContrastOut(BaseModel):
    arm_id: int
    vs_arm_id: int
    suite: str
    metric: str
    mean: float | None
    ci: list[float | None]
    ci_includes_zero: bool | None
    seeds: list[int]
    n_items: int
    n_boot: int
    method: str


class ExperimentOut(BaseModel):
    id: int
    dataset_id: int
    name: str | None
    status: ExperimentStatus
    base_model: str
    seeds: list[int]
    arms: list[ArmOut]
    jobs: list[JobOut]
    results: list[ResultOut]
    contrasts: list[ContrastOut] = Field(default_factory=list, description="pairwise deltas of non-control arms")
    control: str = "random"
    control_task_mix: bool = False
    train_params: dict[str, Any] = Field(default_factory=dict)
    train_params_key: str = ""
    eval_suites: list[dict[str, Any]] = Field(default_factory=list)
    message: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    created_by: str | None = Field(default=None, description="the token that created it (\"env\": QSPACE_API_TOKEN)")
