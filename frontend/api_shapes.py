"""The API's contract as the UI holds it: the typed JSON bodies, the error every failed call becomes,
and the points of a plane decoded from the `/space?format=arrow` stream.

Plain data only: the HTTP calls are `frontend.api_client`'s (which re-exports these names).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = [
    "ApiError",
    "Axis",
    "Dataset",
    "EvalSuite",
    "Experiment",
    "ExperimentArm",
    "ExperimentJob",
    "IngestAccepted",
    "Job",
    "Points",
    "Run",
    "Sample",
    "Selection",
    "SelectionComparison",
    "SelectionPreview",
    "decode_ids",
    "decode_points",
]


class Dataset(TypedDict, total=False):
    id: int
    name: str
    n_samples: int
    task_types: dict[str, int]
    task_type_prompts: dict[str, str]
    image_root: str | None
    sources: list[str]
    created_at: str
    experiment_base_model: str | None  # what an experiment trains when it names no base model


class Sample(TypedDict, total=False):
    id: int
    dataset_id: int
    external_id: str
    image: str | list[str] | None
    conversations: list[dict[str, str]]
    task_type: str
    n_turns: int
    metadata: dict[str, Any]
    scores: dict[str, dict[str, Any]]


class Run(TypedDict, total=False):
    id: int
    dataset_id: int
    kind: str
    params: dict[str, Any]
    scorer_key: str
    status: str
    total: int
    done: int
    errors: int
    samples_per_s: float | None
    eta_s: float | None
    message: str | None


class Neighbour(TypedDict):
    """A sample near another one, or near a typed text: its id and cosine similarity (higher is nearer)."""

    id: int
    score: float


class SearchResult(TypedDict):
    """A text search's answer: the nearest samples, best first."""

    items: list[Neighbour]


class Job(TypedDict, total=False):
    """Background work on the server (e.g. the demo's model training): `done` of `total` `unit`s."""

    id: int
    kind: str
    status: str
    done: int
    total: int
    unit: str
    error: str | None
    result: dict[str, Any] | None
    dataset_id: int | None
    message: str | None
    created_at: str
    updated_at: str


class IngestAccepted(TypedDict, total=False):
    """POST /api/datasets' answer (202): the ingest job; its result holds dataset_id once done."""

    job: Job
    dataset_id: int | None


class Axis(TypedDict, total=False):
    axis: str
    run_id: int
    kind: str
    metric: str
    label: str


class Selection(TypedDict, total=False):
    id: int
    dataset_id: int
    name: str | None
    count: int
    recipe: dict[str, Any]
    by_task_type: dict[str, int]


class MetricSpread(TypedDict, total=False):
    median: float | None
    q25: float | None
    q75: float | None
    n: int


class ComparedSelection(TypedDict, total=False):
    id: int
    name: str | None
    dataset_id: int
    count: int
    by_task_type: dict[str, int]
    metrics: dict[str, MetricSpread]  # "RUN:METRIC" -> median and quartiles over the selection


class Overlap(TypedDict, total=False):
    a: int
    b: int
    both: int
    jaccard: float


class SelectionComparison(TypedDict, total=False):
    """`GET /selections/compare`: 2-3 saved selections side by side, and each pair's overlap."""

    dataset_id: int
    selections: list[ComparedSelection]
    overlap: list[Overlap]
    axes: list[dict[str, Any]]


class SelectionPreview(TypedDict, total=False):
    count: int
    by_task_type: dict[str, int]
    items: list[Sample]
    total: int
    summary: dict[str, Any]
    stats: dict[str, Any]
    population: int


class EvalSuite(TypedDict, total=False):
    """An eval suite an experiment may name; one with `error` is malformed and cannot be used."""

    name: str
    path: str
    n_items: int
    metrics: list[str]
    types: list[str]
    digest: str | None
    error: str | None


class ExperimentArm(TypedDict, total=False):
    """A selection or curriculum the base model is trained on, or the equal-size random `control` of one."""

    id: int
    kind: str  # selection | curriculum | control
    source_id: int | None
    control_of: int | None
    n: int
    position: int
    stage_sizes: list[int]
    label: str


class ExperimentJob(TypedDict, total=False):
    """One arm trained with one seed, then evaluated: `step` of `total_steps` optimizer steps."""

    id: int
    arm_id: int
    seed: int
    status: str
    step: int
    total_steps: int
    loss: float | None
    samples_per_s: float | None
    eta_s: float | None
    error: str | None
    phase: str | None


class Delta(TypedDict, total=False):
    """Arm minus `vs_arm_id` (its control, or another arm), with the 95% paired-bootstrap CI."""

    vs_arm_id: int | None
    mean: float | None
    ci: list[float | None]
    ci_includes_zero: bool | None
    seeds: list[int]
    n_items: int


class ResultLevel(TypedDict, total=False):
    """A metric over seeds: mean, 95% CI, per-seed values; `delta` against the control when there is one."""

    mean: float | None
    ci: list[float | None]
    ci_method: str
    per_seed: list[float | None]
    seeds: list[int]
    n_items: int
    delta: Delta | None


class ExperimentResult(ResultLevel, total=False):
    arm_id: int
    suite: str
    metric: str
    by_type: dict[str, ResultLevel]


class Contrast(Delta, total=False):
    """One non-control arm minus another."""

    arm_id: int
    suite: str
    metric: str


class Experiment(TypedDict, total=False):
    id: int
    dataset_id: int
    name: str | None
    status: str
    base_model: str
    seeds: list[int]
    arms: list[ExperimentArm]
    jobs: list[ExperimentJob]
    results: list[ExperimentResult]
    contrasts: list[Contrast]
    control: str
    train_params: dict[str, Any]
    eval_suites: list[dict[str, Any]]
    message: str | None
    created_at: str | None


class ApiError(Exception):
    """A failed API call, with a message meant for the person using the UI."""

    def __init__(self, message: str, status: int | None = None, detail: Any = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail
        self.body = body  # the whole JSON error body (e.g. ingest's "problems" list)

    def __str__(self) -> str:
        return self.message


@dataclass
class Points:
    """Every point of a (dataset, x, y[, color]) plane, as numpy arrays (the Arrow payload, decoded)."""

    ids: npt.NDArray[np.int32]
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    task_type: npt.NDArray[np.int8]
    task_types: list[str]
    color: npt.NDArray[Any] | None = None
    color_categories: list[str] | None = None  # set when `color` holds category codes
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        n = self.ids.nbytes + self.x.nbytes + self.y.nbytes + self.task_type.nbytes
        return n + (self.color.nbytes if self.color is not None else 0)


def decode_ids(payload: bytes) -> npt.NDArray[np.int32]:
    """Sample ids from a `/members` body (an Arrow IPC stream with one int32 `id` column)."""
    try:
        table = pa.ipc.open_stream(payload).read_all()
    except pa.ArrowInvalid as exc:
        raise ApiError(f"the server sent ids that are not an Arrow stream ({exc})") from None
    if "id" not in table.column_names:
        raise ApiError("the server's ids lack the column 'id'")
    return np.ascontiguousarray(table.column("id").to_numpy(zero_copy_only=False), dtype=np.int32)


def decode_points(payload: bytes) -> Points:
    """Points from the `/space?format=arrow` body (an Arrow IPC stream)."""
    try:
        reader = pa.ipc.open_stream(payload)
        table = reader.read_all()
    except pa.ArrowInvalid as exc:
        raise ApiError(f"the server sent points that are not an Arrow stream ({exc})") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}

    def col(name: str, dtype: str) -> npt.NDArray[Any]:
        return np.ascontiguousarray(table.column(name).to_numpy(zero_copy_only=False), dtype=dtype)

    for name in ("id", "x", "y"):
        if name not in table.column_names:
            raise ApiError(f"the server's points lack the column {name!r}")
    task_types = json.loads(meta["task_types"]) if "task_types" in meta else []
    tt = col("task_type", "int8") if "task_type" in table.column_names else np.zeros(table.num_rows, np.int8)
    color = None
    categories = None
    if "color" in table.column_names:
        raw = table.column("color").to_numpy(zero_copy_only=False)
        if "categories" in meta:
            categories = [str(c) for c in json.loads(meta["categories"])]
            color = np.ascontiguousarray(raw, dtype=np.int16)
        else:
            color = np.ascontiguousarray(raw, dtype=np.float32)
    return Points(
        ids=col("id", "int32"),
        x=col("x", "float32"),
        y=col("y", "float32"),
        task_type=tt,
        task_types=[str(t) for t in task_types],
        color=color,
        color_categories=categories,
        meta=meta,
    )
