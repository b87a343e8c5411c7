"""What the API shows of an experiment: arms, jobs, results with their statistics, pairwise contrasts, and the
results as CSV (one row per job x suite x metric).

Statistics (:mod:`backend.experiment_stats`) use the jobs that are ``done``: per arm, suite and metric the mean
over seeds with its 95% CI and per-seed values; for an arm with a control, the delta (arm minus control) with its
paired bootstrap CI; per item type when the suite's items have types; and ``contrasts`` between every two
non-control arms (a minus b, the same bootstrap).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.experiment_schemas import ArmOut, ContrastOut, ExperimentOut, JobOut, LevelOut, ResultOut
from backend.experiment_stats import Outcomes, arm_summary, paired_delta
from backend.models import Experiment, ExperimentArm, ExperimentJob, ExperimentResult
from backend.queue.progress import aware
from backend.space.cache import LRU

__all__ = ["arm_label", "experiment_out", "job_out", "results_csv"]

Key = tuple[int, str, str]  # (arm id, suite, metric)


def arm_label(arm: ExperimentArm, by_id: dict[int, ExperimentArm]) -> str:
    name = (arm.recipe or {}).get("name")
    if arm.kind == "control":
        of = by_id.get(arm.control_of or 0)
        return f"control of {arm_label(of, by_id)}" if of is not None else "control"
    return f"{arm.kind} {arm.source_id}" + (f" ({name})" if name else "")


def job_out(job: ExperimentJob) -> JobOut:
    return JobOut(
        id=job.id,
        arm_id=job.arm_id,
        seed=job.seed,
        status=job.status,
        step=job.step,
        total_steps=job.total_steps,
        loss=_finite(job.loss),
        samples_per_s=_finite(job.samples_per_s),
        eta_s=0.0 if job.status == "done" else _finite(job.eta_s),
        error=job.error,
        phase=job.phase,
        attempts=job.attempts,
        model_dir=job.model_dir,
        adapter_dir=job.adapter_dir,
        output_dir=job.output_dir,
        started_at=aware(job.started_at),
        finished_at=aware(job.finished_at),
        updated_at=aware(job.updated_at),
    )


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _clean(obj: Any) -> Any:
    """Non-finite floats -> None (JSON has no NaN)."""
    if isinstance(obj, float):
        return _finite(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def load_outcomes(session: Session, exp: Experiment) -> dict[Key, dict[int, Outcomes]]:
    """Per (arm, suite, metric), each done job's outcomes keyed by seed."""
    rows = session.execute(
        select(ExperimentJob.arm_id, ExperimentJob.seed, ExperimentResult)
        .join(ExperimentResult, ExperimentResult.job_id == ExperimentJob.id)
        .where(ExperimentJob.experiment_id == exp.id, ExperimentJob.status == "done")
        .order_by(ExperimentJob.id, ExperimentResult.id)
    )
    out: dict[Key, dict[int, Outcomes]] = defaultdict(dict)
    for arm_id, seed, r in rows:
        o = r.outcomes or {}
        out[(arm_id, r.suite, r.metric)][seed] = Outcomes(
            seed=seed, value=r.value, ids=o.get("ids", []), values=o.get("values", []), types=o.get("types")
        )
    return out


def _suite_order(exp: Experiment) -> dict[str, int]:
    return {s["name"]: k for k, s in enumerate(exp.eval_suites or [])}


# Results of done jobs never change, and their bootstrap costs ~0.1-1 s per call with many jobs, while the
# Experiments page and `qspace demo` poll every second or two during training (the polls took ~30% of a core
# from the training jobs on 2 cores). Keyed by the done jobs and when each finished: a job that runs again and
# finishes anew makes a new key.
_RESULTS = LRU(32)


def results_and_contrasts(session: Session, exp: Experiment) -> tuple[list[ResultOut], list[ContrastOut]]:
    done = tuple(sorted((j.id, str(j.finished_at)) for j in exp.jobs if j.status == "done"))
    return _RESULTS.get_or_make((exp.id, done), lambda: _results_and_contrasts(session, exp))


def _results_and_contrasts(session: Session, exp: Experiment) -> tuple[list[ResultOut], list[ContrastOut]]:
    outcomes = load_outcomes(session, exp)
    arms = {a.id: a for a in exp.arms}
    control_of = {a.control_of: a.id for a in exp.arms if a.kind == "control" and a.control_of is not None}
    order = _suite_order(exp)
    keys = sorted(outcomes, key=lambda k: (arms[k[0]].position if k[0] in arms else 0, order.get(k[1], 99), k[1], k[2]))
    results: list[ResultOut] = []
    for arm_id, suite, metric in keys:
        ctrl_id = control_of.get(arm_id)
        ctrl = outcomes.get((ctrl_id, suite, metric)) if ctrl_id is not None else None
        summary = arm_summary(outcomes[(arm_id, suite, metric)], ctrl, ctrl_id)
        if summary is None:
            continue
        summary = _clean(summary)
        by_type = {t: LevelOut.model_validate(v) for t, v in summary.pop("by_type", {}).items()}
        results.append(ResultOut(arm_id=arm_id, suite=suite, metric=metric, by_type=by_type, **summary))
    treated = [a for a in exp.arms if a.kind != "control"]
    contrasts: list[ContrastOut] = []
    for i, a in enumerate(treated):
        for b in treated[i + 1 :]:
            for suite, metric in sorted({(k[1], k[2]) for k in outcomes}, key=lambda sm: (order.get(sm[0], 99), sm)):
                left, right = outcomes.get((a.id, suite, metric)), outcomes.get((b.id, suite, metric))
                if not left or not right:
                    continue
                d = paired_delta(left, right)
                if d is not None:
                    contrasts.append(ContrastOut(arm_id=a.id, vs_arm_id=b.id, suite=suite, metric=metric, **_clean(d)))
    return results, contrasts


def experiment_out(session: Session, exp: Experiment, with_results: bool = True) -> ExperimentOut:
    by_id = {a.id: a for a in exp.arms}
    arms = [
        ArmOut(
            id=a.id,
            kind=a.kind,
            source_id=a.source_id,
            control_of=a.control_of,
            n=a.n,
            position=a.position,
            stage_sizes=list(a.stage_sizes or []),
            label=arm_label(a, by_id),
        )
        for a in exp.arms
    ]
    results, contrasts = results_and_contrasts(session, exp) if with_results else ([], [])
    return ExperimentOut(
        id=exp.id,
        dataset_id=exp.dataset_id,
        name=exp.name,
        status=exp.status,
        base_model=exp.base_model,
        seeds=list(exp.seeds or []),
        arms=arms,
        jobs=[job_out(j) for j in exp.jobs],
        results=results,
        contrasts=contrasts,
        control=exp.control,
        control_task_mix=exp.control_task_mix,
        train_params=dict(exp.train_params or {}),
        train_params_key=exp.train_params_key,
        eval_suites=list(exp.eval_suites or []),
        message=exp.message,
        created_at=aware(exp.created_at),
        updated_at=aware(exp.updated_at),
        created_by=exp.created_by,
    )


CSV_COLUMNS = (
    "experiment_id",
    "job_id",
    "arm_id",
    "arm_kind",
    "arm_label",
    "source_id",
    "control_of",
    "seed",
    "job_status",
    "suite",
    "digest",
    "metric",
    "value",
    "n_items",
    "model_dir",
)


def results_csv(session: Session, exp: Experiment) -> Iterator[str]:
    """The stored results, one CSV row per job x suite x metric (every job that has results)."""
    by_id = {a.id: a for a in exp.arms}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows = session.execute(
        select(ExperimentJob, ExperimentResult)
        .join(ExperimentResult, ExperimentResult.job_id == ExperimentJob.id)
        .where(ExperimentJob.experiment_id == exp.id)
        .order_by(ExperimentJob.id, ExperimentResult.id)
    )
    for job, r in rows:
        arm = by_id[job.arm_id]
        writer.writerow(
            [
                exp.id,
                job.id,
                arm.id,
                arm.kind,
                arm_label(arm, by_id),
                arm.source_id,
                arm.control_of or "",
                job.seed,
                job.status,
                r.suite,
                r.digest,
                r.metric,
                "" if r.value is None else repr(float(r.value)),
                r.n_items,
                job.model_dir or "",
            ]
        )
        if buf.tell() > 1 << 16:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
