"""Axes of the quality plane: ``RUN:METRIC``, ``KIND:METRIC`` or a shortcut, resolved to a run and a metric,
optionally transformed: ``AXIS@log``, ``AXIS@type_z``, ``AXIS@type_rank`` (:mod:`backend.space.transforms`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import Run, Score
from backend.scorer_specs import metrics_for
from backend.space.transforms import TRANSFORMS, TransformError, split_spec

# Shortcut axis names: the newest finished run of these kinds, main metric.
SHORTCUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "clip": (("clip", "similarity"),),
    "loss": (("mllm_loss", "loss_sum"), ("lm_loss", "loss_sum")),
}
MAIN_METRIC = {"clip": "similarity", "mllm_loss": "loss_sum", "lm_loss": "loss_sum", "ifd": "ifd", "length": "tokens",
               "projection": "map_x", "clusters": "cluster", "duplicates": "dup_rank"}  # derived runs: semantic view


class AxisError(ValueError):
    """An axis that names no metric of a run of this dataset; the message says why."""


@dataclass(frozen=True)
class Axis:
    spec: str
    run_id: int
    kind: str
    metric: str
    scorer_key: str
    transforms: tuple[str, ...] = ()  # applied left to right to the metric's column

    @property
    def label(self) -> str:
        return f"{self.kind} {self.metric} (run {self.run_id})" + "".join(f" @{t}" for t in self.transforms)

    @property
    def raw(self) -> Axis:
        """The same metric, untransformed."""
        return Axis(self.spec.split("@")[0], self.run_id, self.kind, self.metric, self.scorer_key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "axis": f"{self.run_id}:{self.metric}" + "".join(f"@{t}" for t in self.transforms),
            "spec": self.spec,
            "transforms": list(self.transforms),
            "run_id": self.run_id,
            "kind": self.kind,
            "metric": self.metric,
            "scorer_key": self.scorer_key,
            "label": self.label,
        }


def _newest_done(session: Session, dataset_id: int, kind: str) -> Run | None:
    return session.scalar(
        select(Run)
        .where(Run.dataset_id == dataset_id, Run.kind == kind, Run.status == "done")
        .order_by(Run.finished_at.desc().nulls_last(), Run.id.desc())
        .limit(1)
    )


def resolve_axis(session: Session, dataset_id: int, spec: str) -> Axis:
    """`RUN:METRIC`, `KIND:METRIC`, `clip`, `loss` or a kind name, to a run and a metric; a suffix
    `@log`, `@type_z` or `@type_rank` (several chain) transforms it."""
    spec = (spec or "").strip()
    try:
        base, transforms = split_spec(spec)
    except TransformError as e:
        raise AxisError(str(e)) from None
    if not base:
        raise AxisError(
            "axis is empty; use RUN:METRIC (e.g. '3:loss_sum'), 'clip' or 'loss', optionally with "
            + " or ".join(f"@{t}" for t in TRANSFORMS)
        )
    head, _, metric = base.partition(":")
    if head.isdigit():
        run = session.get(Run, int(head))
        if run is None or run.dataset_id != dataset_id:
            raise AxisError(f"axis {spec!r}: run {head} is not a run of dataset {dataset_id}")
        metric = metric or MAIN_METRIC.get(run.kind, "")
    else:
        candidates = SHORTCUTS.get(head, ((head, MAIN_METRIC.get(head, "")),))
        run = None
        for kind, main in candidates:
            run = _newest_done(session, dataset_id, kind)
            if run is not None:
                metric = metric or main
                break
        if run is None:
            kinds = " or ".join(k for k, _ in candidates)
            raise AxisError(f"axis {spec!r}: dataset {dataset_id} has no finished {kinds} run yet")
    if not metric:
        raise AxisError(f"axis {spec!r}: name a metric, e.g. '{run.id}:<metric>'")
    known = metric_names(session, run)
    if known and metric not in known:
        raise AxisError(f"axis {spec!r}: run {run.id} ({run.kind}) has no metric {metric!r}; it has {sorted(known)}")
    return Axis(
        spec=spec, run_id=run.id, kind=run.kind, metric=metric, scorer_key=run.scorer_key, transforms=transforms
    )


def metric_names(session: Session, run: Run) -> set[str]:
    """The metric names present in the run's scores (from one scored row), plus the metrics its params turn
    on: a sample may lack one (mllm_loss's image_gain of a text-only sample), and that row may come first."""
    row = session.scalar(select(Score.metrics).where(Score.run_id == run.id, Score.metrics.is_not(None)).limit(1))
    names = set(row or {})
    if names:
        # not a scorer kind, or params of an older version: the row alone then
        with contextlib.suppress(ValueError):
            names |= set(metrics_for(run.kind, run.params))
    return names


def list_axes(session: Session, dataset_id: int) -> list[dict[str, Any]]:
    runs = session.scalars(select(Run).where(Run.dataset_id == dataset_id).order_by(Run.id)).all()
    out = []
    for run in runs:
        for metric in sorted(metric_names(session, run)):
            axis = Axis(
                spec=f"{run.id}:{metric}", run_id=run.id, kind=run.kind, metric=metric, scorer_key=run.scorer_key
            )
            out.append({**axis.as_dict(), "status": run.status, "main": MAIN_METRIC.get(run.kind) == metric})
    return out
