"""The arms of an experiment: what each trains on, and the random control drawn for it per seed.

An arm is a saved selection (one stage) or a saved curriculum (its stages, trained in order). Its **control** is
an equal-size random sample of the same *population*: the samples that pass the arm's recipe's filters (task
types, errors, metric ranges, metadata) with the region left out (``region: all``), so the control differs from
the arm only in the part of the recipe under test.

- Selection arm: the control draws ``n`` samples from the population.
- Curriculum arm: the control has the same number of stages with the same sizes, drawn at random from the
  population, disjoint like the builder's stages, trained in the same order (so the schedule and the amount of
  data match and only the choice of samples differs). The population is the curriculum's own filters for a
  builder curriculum; for one made of saved selections, the filters those selections share (the curriculum's
  own when they differ).
- ``task_mix``: the control also matches the arm's task-type counts, stage by stage.

Draws are reproducible: numpy's PCG64 seeded with the job's seed over the population's sorted ids. The drawn ids
are stored with each job, so a control never changes after the experiment is created, even when later scores
change the population.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.experiment_schemas import ArmRef
from backend.models import Curriculum, CurriculumStage, Selection
from backend.regions import AllRegion
from backend.selections import Filters, SelectionRequest, ids_from_bytes, resolve_selection
from backend.space import SpaceStore

__all__ = ["ArmError", "ArmPlan", "Population", "draw_control", "population", "resolve_arm"]

IdArray = npt.NDArray[np.int32]
FILTER_FIELDS = tuple(Filters.model_fields)


class ArmError(ValueError):
    """An arm that cannot be trained or controlled (unknown, of another dataset, empty...): HTTP 422."""


@dataclass
class ArmPlan:
    kind: str  # selection | curriculum
    source_id: int
    name: str | None
    recipe: dict[str, Any]
    stages: list[IdArray]
    filters: Filters = field(default_factory=Filters)

    @property
    def n(self) -> int:
        return sum(len(s) for s in self.stages)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.source_id}" + (f" ({self.name})" if self.name else "")


@dataclass
class Population:
    ids: IdArray  # sorted
    codes: npt.NDArray[np.int8]  # task-type code per id
    task_types: list[str]
    filters: dict[str, Any]


def _filters_of(recipe: dict[str, Any]) -> Filters:
    return Filters.model_validate({k: recipe[k] for k in FILTER_FIELDS if k in recipe})


def resolve_arm(session: Session, dataset_id: int, ref: ArmRef) -> ArmPlan:
    """The arm's stages of sample ids and its population's filters; ArmError naming the arm when unusable."""
    where = f"arms: {ref.kind} {ref.source_id}"
    if ref.selection is not None:
        sel = session.get(Selection, ref.selection)
        if sel is None:
            raise ArmError(f"{where} not found")
        if sel.dataset_id != dataset_id:
            raise ArmError(f"{where} belongs to dataset {sel.dataset_id}, not {dataset_id}")
        ids = ids_from_bytes(sel.sample_ids)
        if len(ids) == 0:
            raise ArmError(f"{where} is empty")
        return ArmPlan("selection", sel.id, sel.name, dict(sel.recipe), [ids], _filters_of(sel.recipe))
    cur = session.get(Curriculum, ref.curriculum)
    if cur is None:
        raise ArmError(f"{where} not found")
    if cur.dataset_id != dataset_id:
        raise ArmError(f"{where} belongs to dataset {cur.dataset_id}, not {dataset_id}")
    rows = list(
        session.scalars(
            select(CurriculumStage).where(CurriculumStage.curriculum_id == cur.id).order_by(CurriculumStage.position)
        )
    )
    if not rows:
        raise ArmError(f"{where} has no stages")
    stages = [ids_from_bytes(r.sample_ids) for r in rows]
    for k, ids in enumerate(stages):
        if len(ids) == 0:
            raise ArmError(f"{where}: stage {k} ({rows[k].name}) is empty")
    recipe = dict(cur.recipe)
    filters = _filters_of(recipe)
    if not recipe.get("builder"):
        shared = [r.recipe.get("selection") for r in rows]
        if all(isinstance(s, dict) for s in shared):
            candidates = {_filters_of(s).model_dump_json() for s in shared if s is not None}
            if len(candidates) == 1:
                filters = Filters.model_validate_json(candidates.pop())
    recipe["stages_detail"] = [{"name": r.name, "count": r.count, "recipe": r.recipe} for r in rows]
    return ArmPlan("curriculum", cur.id, cur.name, recipe, stages, filters)


def population(session: Session, store: SpaceStore, dataset_id: int, filters: Filters) -> Population:
    """The samples that pass `filters` (region all), sorted by id."""
    req = SelectionRequest(region=AllRegion(type="all"), **filters.model_dump())
    res = resolve_selection(session, store, dataset_id, req)
    order = np.argsort(res.ids, kind="stable")
    return Population(
        res.ids[order].astype(np.int32), res.task_codes[order], res.task_types, filters.model_dump(mode="json")
    )


def _codes_of(ids: IdArray, store_ids: IdArray, store_codes: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
    pos = np.clip(np.searchsorted(store_ids, ids), 0, max(len(store_ids) - 1, 0))
    known = store_ids[pos] == ids if len(store_ids) else np.zeros(len(ids), dtype=bool)
    return np.where(known, store_codes[pos], -1).astype(np.int8)


def draw_control(
    arm: ArmPlan,
    pop: Population,
    seed: int,
    task_mix: bool = False,
    arm_codes: list[npt.NDArray[np.int8]] | None = None,
) -> list[IdArray]:
    """The control's stages for `seed`: the arm's stage sizes drawn at random, without replacement, from `pop`
    (per task type with `task_mix`: `arm_codes` = the task-type code of each arm sample, per stage)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    sizes = [len(s) for s in arm.stages]
    if not task_mix:
        if arm.n > len(pop.ids):
            raise ArmError(
                f"arms: {arm.label}: its control needs {arm.n} samples but its population (filters "
                f"{pop.filters}) has {len(pop.ids)}"
            )
        drawn = pop.ids[rng.choice(len(pop.ids), size=arm.n, replace=False)]
        bounds = np.cumsum([0, *sizes])
        return [np.sort(drawn[bounds[k] : bounds[k + 1]]).astype(np.int32) for k in range(len(sizes))]
    assert arm_codes is not None and len(arm_codes) == len(sizes)
    out: list[list[IdArray]] = [[] for _ in sizes]
    for code in sorted({int(c) for codes in arm_codes for c in codes}):
        need = [int((codes == code).sum()) for codes in arm_codes]
        pool = pop.ids[pop.codes == code] if code >= 0 else np.empty(0, dtype=np.int32)
        name = pop.task_types[code] if 0 <= code < len(pop.task_types) else "(unknown)"
        if sum(need) > len(pool):
            raise ArmError(
                f"arms: {arm.label}: its task-mix control needs {sum(need)} {name!r} samples but the population "
                f"has {len(pool)}"
            )
        drawn = pool[rng.choice(len(pool), size=sum(need), replace=False)]
        start = 0
        for k, m in enumerate(need):
            out[k].append(drawn[start : start + m])
            start += m
    return [np.sort(np.concatenate(parts)).astype(np.int32) if parts else np.empty(0, np.int32) for parts in out]


def arm_task_codes(session: Session, store: SpaceStore, dataset_id: int, arm: ArmPlan) -> list[npt.NDArray[np.int8]]:
    """The task-type code of each sample of each stage of `arm` (codes as the dataset's columns number them)."""
    cols = store.dataset_columns(session, dataset_id)
    return [_codes_of(ids, cols.ids, cols.task_codes) for ids in arm.stages]
