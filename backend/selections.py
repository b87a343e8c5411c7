"""Selections and curricula: saved recipes over the quality space, resolved to sample ids.

Filters (task types, metadata values, metric ranges, errors) first define the population; the region
is then decided within it, so "top 5%" or a grid cell is relative to the filtered population.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from backend.datasets import NotFound, samples_by_id
from backend.id_lists import ids_from_bytes, ids_to_bytes
from backend.models import Curriculum, CurriculumStage, Dataset, Run, Selection
from backend.regions import (
    SET_REGIONS,
    AllRegion,
    CombineRegion,
    CurriculumBuilder,
    IdsRegion,
    RangeFilter,
    Region,
    Sample,
    balanced_indices,
    curriculum_stages,
    region_mask,
)
from backend.regions import sample_indices as draw
from backend.selection_combine import CombineError, resolve_set_region
from backend.space import Axis, SpaceStore, align, resolve_axis

IdArray = npt.NDArray[np.int32]


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_types: list[str] | None = Field(default=None, description="keep only these task types")
    exclude_errors: bool = Field(default=True, description="drop samples with an error in any run")
    ranges: list[RangeFilter] | None = Field(default=None, description="metric ranges, e.g. {axis, min, max}")
    metadata: dict[str, list[Any]] | None = Field(default=None, description="metadata field -> allowed values")
    dedupe: int | None = Field(
        default=None,
        ge=1,
        le=2_147_483_647,
        description="a finished duplicates run: keep one sample per near-duplicate group (dup_rank == 0)",
    )

    @field_validator("ranges", mode="before")
    @classmethod
    def _ranges_from_mapping(cls, value: Any) -> Any:
        # Also accept {"AXIS": [lo, hi]}, the compact form scripts like to write.
        if isinstance(value, dict):
            out = []
            for axis, bounds in value.items():
                if not isinstance(bounds, list | tuple) or len(bounds) != 2:
                    raise ValueError(f"range on {axis!r}: expected [min, max]")
                out.append({"axis": axis, "min": bounds[0], "max": bounds[1]})
            return out
        return value


class SelectionRequest(Filters):
    name: str | None = Field(default=None, max_length=200)
    x: str = "loss"
    y: str = "clip"
    region: Region
    sample: Sample | None = None


class PreviewRequest(SelectionRequest):
    offset: int = Field(default=0, ge=0, le=2_147_483_647)
    limit: int = Field(default=12, ge=0, le=200)


class CurriculumRequest(Filters):
    name: str | None = Field(default=None, max_length=200)
    x: str = "loss"
    y: str = "clip"
    builder: CurriculumBuilder | None = None
    stages: list[int] | None = Field(default=None, min_length=1, max_length=100, description="selection ids")


class SelectionError(ValueError):
    """A recipe that cannot be resolved (unknown task type, empty result...)."""


@dataclass
class Resolved:
    ids: IdArray
    task_codes: npt.NDArray[np.int8]
    task_types: list[str]
    axes: dict[str, Axis] = field(default_factory=dict)
    population: int = 0
    x: npt.NDArray[np.float64] | None = None
    y: npt.NDArray[np.float64] | None = None
    recipe_extra: dict[str, Any] = field(default_factory=dict)  # saved with the recipe (a combine's lineage)

    def by_task_type(self) -> dict[str, int]:
        counts = np.bincount(self.task_codes.astype(np.int64), minlength=len(self.task_types))
        return {t: int(c) for t, c in zip(self.task_types, counts, strict=False) if c}


@dataclass
class _Base:
    ids: IdArray
    codes: npt.NDArray[np.int8]
    task_types: list[str]
    x: npt.NDArray[np.float64] | None
    y: npt.NDArray[np.float64] | None
    axes: dict[str, Axis]


def _base(session: Session, store: SpaceStore, ds: int, x: str, y: str, need_axes: bool) -> _Base:
    if need_axes:
        ax, ay = resolve_axis(session, ds, x), resolve_axis(session, ds, y)
        sp = store.space(session, ds, ax, ay)
        return _Base(sp.ids, sp.task_codes, sp.task_types, sp.x, sp.y, {"x": ax, "y": ay})
    cols = store.dataset_columns(session, ds)
    return _Base(cols.ids, cols.task_codes, cols.task_types, None, None, {})


def filter_mask(session: Session, store: SpaceStore, ds: int, base: _Base, f: Filters) -> npt.NDArray[np.bool_] | None:
    """Which base points pass the filters; None when no filter applies (saves 1M-element copies)."""
    bad = store.error_ids(session, ds) if f.exclude_errors else np.empty(0, dtype=np.int32)
    if not (f.task_types or len(bad) or f.ranges or f.metadata or f.dedupe):
        return None
    mask = np.ones(len(base.ids), dtype=bool)
    if f.task_types:
        unknown = [t for t in f.task_types if t not in base.task_types]
        if unknown:
            raise SelectionError(f"unknown task type(s) {unknown}; this dataset has {base.task_types}")
        codes = [base.task_types.index(t) for t in f.task_types]
        mask &= np.isin(base.codes, codes)
    if len(bad):
        mask &= ~np.isin(base.ids, bad, assume_unique=True)
    for r in f.ranges or []:
        axis = resolve_axis(session, ds, r.axis)
        col = store.column(session, axis)
        vals = align(base.ids, col.ids, col.values, np.nan)
        mask &= r.mask(vals.astype(np.float64))
    for name, allowed in (f.metadata or {}).items():
        if not allowed:
            raise SelectionError(f"metadata filter {name!r}: give at least one value")
        mids, mvals = store.metadata_column(session, ds, name)
        vals = align(base.ids, mids, mvals, None)
        # Values compare as the strings /metadata_fields lists, where a missing value is "(none)".
        wanted = {"(none)" if v is None else str(v) for v in allowed}
        mask &= np.fromiter((("(none)" if v is None else str(v)) in wanted for v in vals), dtype=bool, count=len(vals))
    if f.dedupe:
        # A sample without a rank (no embedding) cannot be a duplicate: kept (exclude_errors drops it anyway).
        mask &= ~(derived_column(session, store, ds, f.dedupe, "duplicates", "dup_rank", base.ids) > 0)
    return mask


def derived_column(
    session: Session, store: SpaceStore, ds: int, run_id: int, kind: str, metric: str, ids: IdArray
) -> npt.NDArray[np.float64]:
    """A finished derived run's metric aligned to `ids` (NaN where a sample has none); SelectionError if the
    run is not a finished `kind` run of this dataset."""
    run = session.get(Run, run_id)
    if run is None or run.dataset_id != ds:
        raise SelectionError(f"run {run_id} is not a run of dataset {ds}")
    if run.kind != kind or run.status != "done":
        raise SelectionError(f"run {run_id} is a {run.status} {run.kind} run; a finished {kind} run is needed")
    col = store.column(session, resolve_axis(session, ds, f"{run_id}:{metric}"))
    return align(ids, col.ids, col.values, np.nan).astype(np.float64)


def resolve_selection(session: Session, store: SpaceStore, ds: int, req: SelectionRequest) -> Resolved:
    """The sample ids a recipe selects (sorted); deterministic for the same recipe and scores."""
    need_axes = not isinstance(req.region, AllRegion | CombineRegion | IdsRegion)
    base = _base(session, store, ds, req.x, req.y, need_axes)
    mask = filter_mask(session, store, ds, base, req)
    population = len(base.ids) if mask is None else int(mask.sum())
    extra: dict[str, Any] = {}
    if isinstance(req.region, SET_REGIONS):
        idx, extra = _set_positions(session, ds, req.region, base.ids, mask)
    elif need_axes:
        assert base.x is not None and base.y is not None
        if mask is None:
            idx = np.flatnonzero(region_mask(req.region, base.x, base.y))
        else:
            sub = np.flatnonzero(mask)
            idx = sub[region_mask(req.region, base.x[sub], base.y[sub])]
    else:
        idx = np.arange(len(base.ids)) if mask is None else np.flatnonzero(mask)
    if req.sample is not None and req.sample.balance is not None:
        b = req.sample.balance
        labels = derived_column(session, store, ds, b.run, "clusters", "cluster", base.ids[idx])
        groups = np.where(np.isfinite(labels), labels, -1).astype(np.int64)
        idx = balanced_indices(idx, groups, req.sample.n, req.sample.seed, b.mode)
    elif req.sample is not None:
        idx = draw(idx, req.sample.n, req.sample.seed)
    return Resolved(
        ids=base.ids[idx].astype(np.int32),
        task_codes=base.codes[idx],
        task_types=base.task_types,
        axes=base.axes,
        population=population,
        x=None if base.x is None else base.x[idx],
        y=None if base.y is None else base.y[idx],
        recipe_extra=extra,
    )


def _set_positions(
    session: Session, ds: int, region: CombineRegion | IdsRegion, ids: IdArray, mask: npt.NDArray[np.bool_] | None
) -> tuple[npt.NDArray[np.intp], dict[str, Any]]:
    """Positions in `ids` (the dataset's sorted ids) of a set region's samples that pass the filters."""
    try:
        res = resolve_set_region(session, ds, region)
    except CombineError as exc:
        raise SelectionError(str(exc)) from exc
    pos = np.searchsorted(ids, res.ids)
    known = pos < len(ids)
    known[known] = ids[pos[known]] == res.ids[known]
    pos = pos[known]
    if mask is not None:
        pos = pos[mask[pos]]
    return pos, {"lineage": res.lineage}


def preview_selection(session: Session, store: SpaceStore, ds: int, req: PreviewRequest) -> dict[str, Any]:
    """Count, task-type shares, value statistics and the first page of a recipe's samples, saving nothing."""
    res = resolve_selection(session, store, ds, req)
    first = [int(i) for i in res.ids[req.offset : req.offset + req.limit]]
    items = samples_by_id(session, first)
    stats: dict[str, Any] = {}
    if res.x is not None and res.y is not None and len(res.ids):
        stats = {name: _value_stats(v) for name, v in (("x", res.x), ("y", res.y))}
    return {
        "count": len(res.ids),
        "population": res.population,
        "by_task_type": res.by_task_type(),
        "stats": stats,
        "items": [i.model_dump(by_alias=True) for i in items],
        "total": len(res.ids),
    }


def _value_stats(v: npt.NDArray[np.float64]) -> dict[str, float]:
    q25, median, q75 = (float(q) for q in np.quantile(v, (0.25, 0.5, 0.75)))
    return {
        "mean": float(v.mean()),
        "median": median,
        "q25": q25,
        "q75": q75,
        "min": float(v.min()),
        "max": float(v.max()),
    }




def save_selection(session: Session, ds: Dataset, req: SelectionRequest, res: Resolved) -> Selection:
    recipe = req.model_dump(mode="json", exclude={"name"})
    recipe["resolved_axes"] = {k: a.as_dict() for k, a in res.axes.items()}
    recipe["population"] = res.population
    recipe.update(res.recipe_extra)
    sel = Selection(
        dataset_id=ds.id,
        name=req.name,
        recipe=recipe,
        count=len(res.ids),
        sample_ids=ids_to_bytes(res.ids),
        task_type_counts=res.by_task_type(),
    )
    session.add(sel)
    session.flush()
    return sel


def selection_counts(session: Session, store: SpaceStore, sel: Selection) -> dict[str, int]:
    """A saved selection's task-type counts: kept with it, or (saved before they were) counted from its ids once
    per dataset state and cached."""
    if sel.task_type_counts is not None:
        return dict(sel.task_type_counts)
    key = ("seltypes", store.dataset_stamp(session, sel.dataset_id), sel.id, str(sel.created_at), sel.count)
    return store.cache.get_or_make(
        key, lambda: by_task_type(session, store, sel.dataset_id, ids_from_bytes(sel.sample_ids))
    )


def by_task_type(session: Session, store: SpaceStore, dataset_id: int, ids: IdArray) -> dict[str, int]:
    cols = store.dataset_columns(session, dataset_id)
    n = len(cols.ids)
    if n and int(cols.ids[-1]) - int(cols.ids[0]) + 1 == n:
        # The usual dataset's ids are one run of integers: a position is a subtraction (4M ids: 150 -> ~15 ms).
        pos = ids.astype(np.int64) - int(cols.ids[0])
        pos = pos[(pos >= 0) & (pos < n)]
    else:
        pos = np.searchsorted(cols.ids, ids)
        pos = pos[(pos < n)]
    codes = cols.task_codes[pos]
    counts = np.bincount(codes.astype(np.int64), minlength=len(cols.task_types))
    return {t: int(c) for t, c in zip(cols.task_types, counts, strict=False) if c}


# ----------------------------------------------------------------------------------------------
# Curricula
# ----------------------------------------------------------------------------------------------


@dataclass
class PlannedStage:
    name: str
    ids: IdArray
    recipe: dict[str, Any]
    selection_id: int | None = None


def plan_builder(session: Session, store: SpaceStore, ds: int, req: CurriculumRequest) -> list[PlannedStage]:
    """The paper's builder: stage k keeps x >= x_min + k*dx and y >= y_min + k*dy, n drawn per stage."""
    b = req.builder
    assert b is not None
    base = _base(session, store, ds, req.x, req.y, need_axes=True)
    assert base.x is not None and base.y is not None
    eligible = filter_mask(session, store, ds, base, req)
    finite = np.isfinite(base.x) & np.isfinite(base.y)
    if eligible is not None:
        finite &= eligible
    if not finite.any():
        raise SelectionError("no scored samples pass the filters; nothing to build stages from")
    x0 = float(base.x[finite].min()) if b.x_min is None else b.x_min
    y0 = float(base.y[finite].min()) if b.y_min is None else b.y_min
    drawn = curriculum_stages(base.x, base.y, eligible, b.stages, x0, y0, b.dx, b.dy, b.per_stage, b.seed, b.disjoint)
    names = _stage_names(b.stages)
    out = []
    for k, idx in enumerate(drawn):
        thr_x, thr_y = x0 + k * b.dx, y0 + k * b.dy
        available = int((finite & (base.x >= thr_x) & (base.y >= thr_y)).sum())
        recipe = {
            "stage": k,
            "x_min": thr_x,
            "y_min": thr_y,
            "per_stage": b.per_stage,
            "seed": b.seed,
            "available": available,
            "rule": f"x >= {thr_x:.6g} and y >= {thr_y:.6g}",
        }
        out.append(PlannedStage(names[k], base.ids[idx].astype(np.int32), recipe))
    return out


def _stage_names(n: int) -> list[str]:
    if n == 3:
        return ["initialization", "intermediate", "advanced"]  # the paper's names
    return [f"stage_{k + 1}" for k in range(n)]


def plan_from_selections(session: Session, ds: int, selection_ids: list[int]) -> list[PlannedStage]:
    out = []
    for k, sid in enumerate(selection_ids):
        sel = session.get(Selection, sid)
        if sel is None or sel.dataset_id != ds:
            raise NotFound(f"selection {sid} not found in dataset {ds}")
        name = sel.name or f"stage_{k + 1}"
        out.append(PlannedStage(name, ids_from_bytes(sel.sample_ids), {"stage": k, "selection": sel.recipe}, sid))
    return out


def plan_curriculum(session: Session, store: SpaceStore, ds: int, req: CurriculumRequest) -> list[PlannedStage]:
    if (req.builder is None) == (req.stages is None):
        raise SelectionError("give either 'builder' (the paper's staged builder) or 'stages' (selection ids)")
    if req.builder is not None:
        return plan_builder(session, store, ds, req)
    assert req.stages is not None
    return plan_from_selections(session, ds, req.stages)


def save_curriculum(
    session: Session, store: SpaceStore, ds: Dataset, req: CurriculumRequest, stages: list[PlannedStage]
) -> Curriculum:
    recipe = req.model_dump(mode="json", exclude={"name"})
    if req.builder is not None:
        recipe["resolved_axes"] = {
            "x": resolve_axis(session, ds.id, req.x).as_dict(),
            "y": resolve_axis(session, ds.id, req.y).as_dict(),
        }
    cur = Curriculum(dataset_id=ds.id, name=req.name, recipe=recipe)
    for k, st in enumerate(stages):
        cur.stages.append(
            CurriculumStage(
                position=k,
                name=st.name,
                selection_id=st.selection_id,
                recipe=st.recipe,
                count=len(st.ids),
                sample_ids=ids_to_bytes(st.ids),
            )
        )
    session.add(cur)
    session.flush()
    return cur
