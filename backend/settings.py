"""The one settings object; nothing else in qspace reads the environment."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_paths(value: Any) -> Any:
    # Accept a JSON list, or os.pathsep/comma separated paths, as shells make lists awkward.
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            import json

            return json.loads(text)
        return [p for p in text.replace(",", ":").split(":") if p]
    return value


class Settings(BaseSettings):
    """qspace configuration, from `QSPACE_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="QSPACE_", extra="ignore")

    data_dir: Path = Field(default=Path.home() / ".qspace", description="SQLite file, broker, caches, models")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    broker_url: str | None = Field(default=None, description="Celery broker; default server-less SQLite")
    result_backend: str | None = None
    api_token: str | None = Field(default=None, description="when set, mutating requests need this bearer")
    image_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="directories ingest may read images from (besides data_dir)"
    )
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="directories the API may read dataset files from"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    max_request_bytes: int = 8 * 1024 * 1024
    # Imported subsets are bigger: 665K LLaVA ids are ~10 MB of JSON, LLaVA records ~1.5 KB each.
    max_import_bytes: int = Field(default=256 * 1024 * 1024, description="body limit of selection imports")
    max_page_size: int = 1000
    chunk_size: int = 256
    persist_columns: bool = Field(
        default=True,
        description="keep score and dataset columns as Arrow files in data_dir/columns, so a restarted server "
        "serves the plane without reading every score again (backend/column_files.py)",
    )
    space_cache_mb: int = Field(
        default=1536,
        ge=16,
        description="memory the API keeps columns, planes and encoded plane payloads in (least recently used "
        "dropped past it, then read again from the column files); one 10M-point plane with its columns and "
        "payload takes ~600 MB (backend/space/cache.py)",
    )
    worker_concurrency: int = 1
    ui_point_budget: int = Field(
        default=200_000,
        ge=100,
        description="the UI never asks the API for more points than this: a bigger plane is drawn as the server's "
        "density grid of the view plus a density-aware sample of at most this many points, both fetched again on "
        "zoom (frontend/pages/explore/viewport.py); counts stay the server's over every point",
    )

    # --- scoring queue (backend/queue/, backend/runs.py, workers/) ---
    visibility_timeout_s: int = Field(
        default=300,
        ge=5,
        description="Redis: a chunk taken by a worker that died unacknowledged is redelivered after this long; "
        "keep it well above the time one chunk takes",
    )
    broker_transport_options: dict[str, Any] = Field(
        default_factory=dict, description="extra kombu transport options (JSON), e.g. global_keyprefix"
    )
    worker_device: str | None = Field(default=None, description="torch device for scorers, e.g. cuda:1")
    progress_window_s: float = Field(default=30.0, gt=0, description="time constant of the samples/s estimate")
    run_stale_s: float = Field(
        default=900.0,
        gt=0,
        description="an active run with no progress for this long is re-enqueued (its missing samples): by the "
        "API's sweeper when the queue holds no work, or when it is posted again",
    )
    chunk_max_retries: int = Field(default=8, ge=0, description="retries of a chunk after database/broker errors")
    chunk_max_deliveries: int = Field(
        default=3,
        ge=1,
        description="a chunk whose worker died on this many deliveries is split in halves, scored separately, "
        "until the sample that kills its worker is isolated; that sample gets an error row",
    )
    sweep_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="the API looks this often for active runs and experiment jobs with no progress for "
        "run_stale_s whose work left the queue, and enqueues what is missing again (0: never)",
    )

    # --- experiments (backend/experiments.py, backend/queue/jobs.py, workers/experiment_tasks.py) ---
    eval_suites: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="eval suite files (JSONL) or folders of them, besides data_dir/eval_suites/",
    )
    lmms_tasks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="lmms-eval tasks an experiment may name as eval suite lmms:<task> (e.g. pope,gqa); workers run "
        "them with lmms-eval and its data installed (backend/lmms_specs.py)",
    )
    lmms_include: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="folders of local lmms-eval task YAMLs (lmms-eval's --include_path); each task they define "
        "is listed as lmms:<task>",
    )
    job_lease_s: float = Field(
        default=60.0,
        ge=1,
        description="a running training job whose worker sent no heartbeat for this long is taken over by the "
        "next delivery (its worker died); workers beat every few seconds",
    )

    @field_validator("image_roots", "data_roots", "eval_suites", "lmms_tasks", "lmms_include", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return _split_paths(value)

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'qspace.db'}"

    @property
    def celery_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def celery_result_backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.broker_url and self.broker_url.startswith("redis"):
            return self.broker_url
        return f"db+sqlite:///{self.data_dir / 'results.db'}"

    @property
    def allowed_roots(self) -> list[Path]:
        """Directories the server may read dataset files and images from."""
        roots = [self.data_dir, *self.image_roots, *self.data_roots]
        return [Path(r).expanduser().resolve() for r in roots]

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built once."""
    return Settings()
