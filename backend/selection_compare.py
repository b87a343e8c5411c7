"""Compare 2-3 saved selections of one dataset: size, task-type mix, every finished run's metrics, pairwise overlap.

Metrics come from the space store's cached score columns (one column per ``RUN:METRIC`` of every finished run of
the dataset), so comparing after browsing the plane reads nothing new from the database. A selection's summary
of a metric is taken over its samples that have a finite value in that column (``n`` of them).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.datasets import NotFound
from backend.models import Run, Selection
from backend.selection_combine import stored_ids
from backend.space import Axis, SpaceStore, metric_names

IdArray = npt.NDArray[np.int32]
MIN_COMPARED, MAX_COMPARED = 2, 3


class MetricSummary(BaseModel):
    median: float | None
    q25: float | None
    q75: float | None
    n: int  # samples of the selection with a finite value


class ComparedSelection(BaseModel):
    id: int
    name: str | None
    dataset_id: int
    count: int
    by_task_type: dict[str, int]
    metrics: dict[str, MetricSummary]  # "RUN:METRIC" -> summary


class Overlap(BaseModel):
    a: int
    b: int
    both: int
    jaccard: float


class CompareOut(BaseModel):
    dataset_id: int
    selections: list[ComparedSelection]
    overlap: list[Overlap]
    axes: list[dict[str, Any]]  # each metric's run, kind and label (as /axes lists them)


class CompareError(ValueError):
    """A request that names the wrong number of selections, or selections of different datasets: HTTP 400."""


def parse_ids(raw: str) -> list[int]:
    """``"1,2[,3]"`` -> ``[1, 2, 3]``: 2 or 3 distinct positive ids, or CompareError saying what is wrong."""
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not all(p.isascii() and p.isdigit() and 0 < int(p) <= 2_147_483_647 for p in parts):
        raise CompareError(f"ids: expected comma-separated selection ids, e.g. '1,2', got {raw[:100]!r}")
    ids = [int(p) for p in parts]
    if len(set(ids)) != len(ids):
        raise CompareError(f"ids: a selection is named twice in {ids}")
    if not MIN_COMPARED <= len(ids) <= MAX_COMPARED:
        raise CompareError(f"ids: compare {MIN_COMPARED} or {MAX_COMPARED} selections, got {len(ids)}")
    return ids


def finished_axes(session: Session, dataset_id: int) -> list[Axis]:
    """``RUN:METRIC`` of every metric of every finished run of the dataset, by run id then metric name."""
    runs = session.scalars(select(Run).where(Run.dataset_id == dataset_id, Run.status == "done").order_by(Run.id)).all()
    return [
        Axis(spec=f"{r.id}:{m}", run_id=r.id, kind=r.kind, metric=m, scorer_key=r.scorer_key)
        for r in runs
        for m in sorted(metric_names(session, r))
    ]


def metric_summary(values: npt.NDArray[np.float64]) -> dict[str, Any]:
    if values.size == 0:
        return {"median": None, "q25": None, "q75": None, "n": 0}
    q25, median, q75 = (float(q) for q in np.quantile(values, (0.25, 0.5, 0.75)))
    return {"median": median, "q25": q25, "q75": q75, "n": int(values.size)}


def _values_of(ids: IdArray, col_ids: IdArray, col_values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The column's values for those of `ids` it holds (both sorted)."""
    if not len(col_ids):
        return np.empty(0, dtype=np.float64)
    pos = np.clip(np.searchsorted(col_ids, ids), 0, len(col_ids) - 1)
    return col_values[pos[col_ids[pos] == ids]]


def _by_task_type(ids: IdArray, ds_ids: IdArray, codes: npt.NDArray[np.int8], names: list[str]) -> dict[str, int]:
    pos = np.searchsorted(ds_ids, ids)
    pos = pos[pos < len(ds_ids)]
    counts = np.bincount(codes[pos].astype(np.int64), minlength=len(names))
    return {t: int(c) for t, c in zip(names, counts, strict=False) if c}


def compare_selections(session: Session, store: SpaceStore, ids: list[int]) -> dict[str, Any]:
    """``{selections: [{id, count, by_task_type, metrics: {AXIS: {median, q25, q75, n}}}], overlap, axes}``."""
    rows = []
    for sid in ids:
        row = session.get(Selection, sid)
        if row is None:
            raise NotFound(f"selection {sid} not found")
        rows.append(row)
    datasets = sorted({r.dataset_id for r in rows})
    if len(datasets) > 1:
        where = ", ".join(f"{r.id} -> {r.dataset_id}" for r in rows)
        raise CompareError(f"compare selections of one dataset; these belong to datasets ({where})")
    ds = datasets[0]
    sets = [stored_ids(r) for r in rows]
    cols = store.dataset_columns(session, ds)
    axes = finished_axes(session, ds)
    columns = [(a, store.column(session, a)) for a in axes]
    selections = [
        {
            "id": r.id,
            "name": r.name,
            "dataset_id": r.dataset_id,
            "count": len(s),
            "by_task_type": _by_task_type(s, cols.ids, cols.task_codes, cols.task_types),
            "metrics": {a.spec: metric_summary(_values_of(s, c.ids, c.values)) for a, c in columns},
        }
        for r, s in zip(rows, sets, strict=True)
    ]
    overlap = []
    for (ra, sa), (rb, sb) in combinations(zip(rows, sets, strict=True), 2):
        both = int(np.intersect1d(sa, sb, assume_unique=True).size)
        either = len(sa) + len(sb) - both
        overlap.append({"a": ra.id, "b": rb.id, "both": both, "jaccard": both / either if either else 0.0})
    return {
        "dataset_id": ds,
        "selections": selections,
        "overlap": overlap,
        "axes": [{**a.as_dict(), "axis": a.spec} for a in axes],
    }
