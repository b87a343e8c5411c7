"""SQL models (SQLAlchemy 2, typed). The schema itself is created only by Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# JSONB on PostgreSQL so SQL can index into metrics and metadata cheaply.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores none and returns naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    image_root: Mapped[str | None] = mapped_column(Text)
    sources: Mapped[list[str]] = mapped_column(JSONType, default=list)
    task_type_prompts: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    n_samples: Mapped[int] = mapped_column(Integer, default=0)
    # Task type -> samples, set by ingest (None: ingested before revision 0008, counted with a GROUP BY).
    task_type_counts: Mapped[dict[str, int] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The base model an experiment on this dataset trains when it names none (the demo sets its own).
    experiment_base_model: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Who created the row: an API token's name, "env" for QSPACE_API_TOKEN, None on an open server or the CLI.
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)

    runs: Mapped[list[Run]] = relationship(back_populates="dataset", passive_deletes=True)


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("dataset_id", "external_id", name="uq_samples_dataset_external"),
        Index("ix_samples_dataset_position", "dataset_id", "position"),
        Index("ix_samples_dataset_task_position", "dataset_id", "task_type", "position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    external_id: Mapped[str] = mapped_column(Text)
    # str for one image, list for several, None for text-only; relative to the dataset's image root.
    image: Mapped[Any] = mapped_column(JSONType, nullable=True)
    # Plain JSON (not JSONB) on PostgreSQL: kept verbatim and never queried into, so cheaper to COPY.
    conversations: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    task_type: Mapped[str] = mapped_column(String(200), default="unknown")
    n_turns: Mapped[int] = mapped_column(Integer, default=0)
    question_chars: Mapped[int] = mapped_column(Integer, default=0)
    answer_chars: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)

    @property
    def images(self) -> list[str]:
        if self.image is None:
            return []
        return [self.image] if isinstance(self.image, str) else list(self.image)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("dataset_id", "scorer_key", name="uq_runs_dataset_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    scorer_key: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    samples_per_s: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)  # see Dataset.created_by

    dataset: Mapped[Dataset] = relationship(back_populates="runs")


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = (
        Index(
            "ix_scores_errors",
            "run_id",
            "sample_id",
            sqlite_where=text("error IS NOT NULL"),
            postgresql_where=text("error IS NOT NULL"),
        ),
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(
        ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)


class Selection(Base):
    __tablename__ = "selections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    recipe: Mapped[dict[str, Any]] = mapped_column(JSONType)
    count: Mapped[int] = mapped_column(Integer, default=0)
    # Resolved sample ids, int32 little-endian, so paging and export need no re-resolution.
    sample_ids: Mapped[bytes] = mapped_column(LargeBinary)
    # Task type -> samples, kept at saving so listing selections never reads their id lists (None: saved before
    # revision 0008, counted from the ids when asked).
    task_type_counts: Mapped[dict[str, int] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)  # see Dataset.created_by


class Curriculum(Base):
    __tablename__ = "curricula"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    recipe: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)  # see Dataset.created_by

    stages: Mapped[list[CurriculumStage]] = relationship(
        order_by="CurriculumStage.position", passive_deletes=True, cascade="all, delete-orphan"
    )


class CurriculumStage(Base):
    __tablename__ = "curriculum_stages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    curriculum_id: Mapped[int] = mapped_column(ForeignKey("curricula.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    selection_id: Mapped[int | None] = mapped_column(ForeignKey("selections.id", ondelete="SET NULL"))
    recipe: Mapped[dict[str, Any]] = mapped_column(JSONType)
    count: Mapped[int] = mapped_column(Integer, default=0)
    sample_ids: Mapped[bytes] = mapped_column(LargeBinary)


# ----------------------------------------------------------------------------------------------
# Experiments (the closed loop): arms x seeds = jobs; one result row per (job, suite, metric)
# ----------------------------------------------------------------------------------------------


class Experiment(Base):
    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("dataset_id", "identity_key", name="uq_experiments_dataset_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    base_model: Mapped[str] = mapped_column(Text)
    # sha256 of the base's config.json for a local folder (a hub name is its own identity): None for a hub name.
    base_config_sha256: Mapped[str | None] = mapped_column(String(80))
    seeds: Mapped[list[int]] = mapped_column(JSONType, default=list)
    control: Mapped[str] = mapped_column(String(16), default="random")
    control_task_mix: Mapped[bool] = mapped_column(Boolean, default=False)
    train_request: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # as posted
    train_params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # every value resolved
    train_params_key: Mapped[str] = mapped_column(String(64))
    # [{name, path, digest, n_items, metrics, types}] as they were when the experiment was created.
    eval_suites: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # sha256 of what makes two posts "the same experiment": posting it again resumes this row.
    identity_key: Mapped[str] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)  # see Dataset.created_by

    arms: Mapped[list[ExperimentArm]] = relationship(
        order_by="ExperimentArm.position", passive_deletes=True, cascade="all, delete-orphan"
    )
    jobs: Mapped[list[ExperimentJob]] = relationship(
        order_by="ExperimentJob.id", passive_deletes=True, cascade="all, delete-orphan"
    )


class ExperimentArm(Base):
    __tablename__ = "experiment_arms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # selection | curriculum | control
    # The selection or curriculum (a control: its arm's), kept as a plain id: deleting it keeps the experiment.
    source_id: Mapped[int | None] = mapped_column(Integer)
    control_of: Mapped[int | None] = mapped_column(ForeignKey("experiment_arms.id", ondelete="CASCADE"))
    n: Mapped[int] = mapped_column(Integer, default=0)  # samples trained on, all stages together
    stage_sizes: Mapped[list[int]] = mapped_column(JSONType, default=list)
    # The source's recipe when the experiment was created (a control: how its samples are drawn).
    recipe: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class ExperimentJob(Base):
    __tablename__ = "experiment_jobs"
    __table_args__ = (UniqueConstraint("arm_id", "seed", name="uq_experiment_jobs_arm_seed"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    arm_id: Mapped[int] = mapped_column(ForeignKey("experiment_arms.id", ondelete="CASCADE"), index=True)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    phase: Mapped[str | None] = mapped_column(String(16))  # loading | training | evaluating
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float)
    samples_per_s: Mapped[float | None] = mapped_column(Float)
    eta_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # deliveries that started the job
    # The stages' sample ids (int32 little-endian, stages concatenated; sizes in stage_sizes): fixed when the
    # experiment is created, so a control's random draw is kept, not redrawn.
    sample_ids: Mapped[bytes] = mapped_column(LargeBinary)
    stage_sizes: Mapped[list[int]] = mapped_column(JSONType, default=list)
    output_dir: Mapped[str | None] = mapped_column(Text)
    model_dir: Mapped[str | None] = mapped_column(Text)
    adapter_dir: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # the training's result, in short
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    arm: Mapped[ExperimentArm] = relationship()


class ExperimentResult(Base):
    __tablename__ = "experiment_results"
    __table_args__ = (UniqueConstraint("job_id", "suite", "metric", name="uq_experiment_results_job_suite_metric"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("experiment_jobs.id", ondelete="CASCADE"), index=True)
    suite: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(80))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    n_items: Mapped[int] = mapped_column(Integer, default=0)
    # Per item, in suite order: {"ids": [..], "values": [.. | null], "types": [.. | null] | null} (the statistics
    # pair an arm's items with its control's by id).
    outcomes: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# ----------------------------------------------------------------------------------------------
# Background jobs: long work outside the scoring queue (the demo's model training; later ingest)
# ----------------------------------------------------------------------------------------------


class BackgroundJob(Base):
    """One piece of background work and its progress (``done`` of ``total`` ``unit``s); DESIGN.md's Job."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))  # demo_models | ...
    # The dataset the work is for (None: not known yet, e.g. an ingest that has not created it).
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True, nullable=True
    )
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|running|done|failed|cancelled
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    unit: Mapped[str] = mapped_column(String(32), default="")
    message: Mapped[str | None] = mapped_column(Text)  # what it is doing now, in words
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


# ----------------------------------------------------------------------------------------------
# Fault handling: deliveries of scoring chunks (poison chunks) and leases (one sweeper at a time)
# ----------------------------------------------------------------------------------------------


class ChunkAttempt(Base):
    """The deliveries of one chunk of a run (backend/queue/attempts.py): a delivery records its start before
    scoring and its end after; the next delivery that finds a start without an end knows its worker died."""

    __tablename__ = "chunk_attempts"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    chunk_key: Mapped[str] = mapped_column(String(40), primary_key=True)  # sha1 of the chunk's sorted ids
    size: Mapped[int] = mapped_column(Integer, default=0)
    depth: Mapped[int] = mapped_column(Integer, default=0)  # 0: planned by the run; n: split n times
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    deaths: Mapped[int] = mapped_column(Integer, default=0)  # deliveries whose worker died mid-chunk
    # The last delivery's worker process: "host pid start-time" (the start time tells a live pid from a reused one)
    worker: Mapped[str | None] = mapped_column(String(255))
    last_exit: Mapped[str | None] = mapped_column(Text)  # how that process ended, e.g. "signal 9 (SIGKILL)"
    outcome: Mapped[str | None] = mapped_column(String(16))  # scored | split | poison (None: in progress)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Lease(Base):
    """A named lease held by one process until ``expires_at`` (e.g. the API's stall sweeper)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


# ----------------------------------------------------------------------------------------------
# Access: API tokens, stored hashed (backend/tokens.py)
# ----------------------------------------------------------------------------------------------


class ApiToken(Base):
    """A named bearer token with a scope (read < write < admin). Only its sha256 is kept; revoked rows stay, so a
    name is never reused and `created_by` columns keep naming one token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
