"""The Celery task that runs one experiment job: claim it, train, evaluate on every suite, record, finish.

Thin and idempotent; the store side is :mod:`backend.queue.jobs`, the work :mod:`workers.training` and
:mod:`workers.evaluation`.

- A job already finished, cancelled, or running under a live worker is not started again (the claim fails). A
  job whose worker died (its heartbeat is older than ``job_lease_s``) is taken over by the next delivery: Redis
  redelivers an unacknowledged message, the server-less broker needs the experiment posted again (or a fresh
  embedded worker, which enqueues unfinished jobs). ``train`` resumes from the job folder's last checkpoint, and
  suites already recorded are not evaluated again, so a result is stored once.
- While the job runs, a heartbeat thread writes the latest progress every ``PROGRESS_EVERY_S`` seconds (the
  training loop itself never waits on the database) and learns of a cancel (its heartbeat then touches no row):
  training stops at its next step, keeping its checkpoint.
- Any other error marks the job failed with its reason; the experiment's status follows its jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backend.db import session_scope
from backend.eval_specs import load_eval_suite
from backend.lmms_specs import is_lmms_suite
from backend.models import ExperimentJob
from backend.queue import TRAIN_JOB_TASK
from backend.queue.jobs import (
    JobSpec,
    beat,
    claim_job,
    finish_job,
    job_output_dir,
    job_spec,
    record_suite,
    recorded_suites,
)
from backend.settings import Settings
from backend.train_specs import TrainParams
from workers.celery_app import app
from workers.tasks import TRANSIENT_DB_ERRORS, store, with_db_retry, worker_device

if TYPE_CHECKING:
    from workers.evaluation import SuiteEvaluator, SuiteResult
    from workers.training import Progress, TrainResult

log = logging.getLogger("qspace.worker.experiments")

PROGRESS_EVERY_S = 2.0
BUSY_RETRIES = 2  # a delivery that finds the job running elsewhere looks again this often, one lease apart


def train_model(*args: Any, **kwargs: Any) -> TrainResult:
    """:func:`workers.training.train`, imported when the first job runs (a scoring-only worker never loads it)."""
    from workers.training import train

    return train(*args, **kwargs)


def load_evaluator(model_dir: str, device: str | None, template: str) -> SuiteEvaluator:
    from workers.evaluation import SuiteEvaluator

    return SuiteEvaluator(model_dir, device=device, template=template)


def run_lmms_suite(
    evaluator: SuiteEvaluator, ref: dict[str, Any], should_stop: Callable[[], bool]
) -> SuiteResult | None:
    """:func:`workers.evaluation.lmms.run_lmms_ref` for an ``lmms:<task>`` suite, imported only then (lmms-eval is
    the optional extra ``qspace[lmms]``)."""
    from workers.evaluation.lmms import run_lmms_ref

    return run_lmms_ref(evaluator, ref, should_stop=should_stop)


class Heartbeat(threading.Thread):
    """Writes the job's latest progress and heartbeat every few seconds; sets ``stop`` when the job is no longer
    running under this worker's attempt (cancelled, or taken over)."""

    def __init__(self, factory: sessionmaker[Session], job_id: int, attempt: int, every_s: float) -> None:
        super().__init__(name=f"qspace-job-{job_id}-heartbeat", daemon=True)
        self.factory, self.job_id, self.attempt, self.every_s = factory, job_id, attempt, every_s
        self.stop = threading.Event()
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}

    def update(self, **values: Any) -> None:
        with self._lock:
            self._values.update(values)

    def on_progress(self, p: Progress) -> None:
        self.update(
            phase="training",
            step=p.step,
            total_steps=p.total_steps,
            loss=p.loss,
            samples_per_s=round(p.samples_per_s, 3),
            eta_s=None if p.eta_s is None else round(p.eta_s, 1),
        )

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def beat_now(self) -> None:
        with self._lock:
            values, self._values = self._values, {}
        try:
            with session_scope(self.factory) as session:
                alive = beat(session, self.job_id, self.attempt, values)
        except TRANSIENT_DB_ERRORS as exc:  # the database is away for now: keep the values for the next beat
            log.warning("job %d: heartbeat failed: %s", self.job_id, str(exc).splitlines()[0][:200])
            with self._lock:
                self._values = {**values, **self._values}
            return
        if not alive:
            log.info("job %d: no longer running under attempt %d; stopping", self.job_id, self.attempt)
            self.stop.set()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            self.beat_now()

    def close(self) -> None:
        self.done.set()
        self.join(timeout=30)


@dataclass
class JobReport:
    job_id: int
    status: str  # done | failed | stopped | skipped | busy
    reason: str | None = None
    seconds: float = 0.0
    results: int = 0  # result rows written by this delivery


def suite_rows(result: SuiteResult, metrics: list[str]) -> list[dict[str, Any]]:
    """One row per metric: the suite's value, its item count and every item's outcome (for the bootstrap)."""
    ids = [o.id for o in result.items]
    types = [o.type for o in result.items]
    has_types = any(t is not None for t in types)
    per_metric = {
        "accuracy": [o.correct for o in result.items],
        "answer_loss": [o.answer_loss for o in result.items],
    }
    return [
        {
            "metric": m,
            "value": result.metrics.get(m),
            "n_items": result.n_items.get(m, 0),
            "outcomes": {
                "ids": ids,
                "values": per_metric.get(m, [None] * len(ids)),
                "types": types if has_types else None,
            },
        }
        for m in metrics
    ]


def _evaluate(
    factory: sessionmaker[Session], spec: JobSpec, model_dir: str, device: str | None, hb: Heartbeat
) -> tuple[bool, int]:
    """Evaluate the trained model on every suite not yet recorded; (finished, rows written)."""
    done = with_db_retry(lambda: _recorded(factory, spec.job_id), f"job {spec.job_id} results")
    evaluator: SuiteEvaluator | None = None
    written = 0
    for ref in spec.suites:
        if ref["name"] in done:
            continue
        if is_lmms_suite(ref["name"]):  # an lmms-eval task: lmms-eval reads its documents
            hb.update(phase="evaluating")
            if evaluator is None:
                evaluator = load_evaluator(model_dir, device, TrainParams.model_validate(spec.train_params).template)
            lmms_result = run_lmms_suite(evaluator, ref, hb.should_stop)
            if lmms_result is None:
                return False, written
            lmms_rows = suite_rows(lmms_result, list(ref.get("metrics") or lmms_result.metrics))

            def write_lmms(ref: dict[str, Any] = ref, rows: list[dict[str, Any]] = lmms_rows) -> int:
                with session_scope(factory) as session:
                    return record_suite(session, spec.job_id, ref["name"], ref["digest"], rows)

            written += with_db_retry(write_lmms, f"job {spec.job_id} suite {ref['name']}")
            continue
        suite = load_eval_suite(ref["path"], name=ref["name"])
        if suite.digest != ref["digest"]:
            raise ValueError(
                f"eval suite {ref['name']!r} ({ref['path']}) changed since the experiment was created "
                f"(digest {suite.digest[:19]}, expected {ref['digest'][:19]}); create a new experiment to use it"
            )
        hb.update(phase="evaluating")
        if evaluator is None:
            params = TrainParams.model_validate(spec.train_params)
            evaluator = load_evaluator(model_dir, device, params.template)
        result = evaluator.evaluate(suite, should_stop=hb.should_stop)
        if result is None:
            return False, written
        rows = suite_rows(result, list(ref.get("metrics") or suite.metrics))

        def write(name: str = suite.name, digest: str = suite.digest, rows: list[dict[str, Any]] = rows) -> int:
            with session_scope(factory) as session:
                return record_suite(session, spec.job_id, name, digest, rows)

        written += with_db_retry(write, f"job {spec.job_id} suite {suite.name}")
    return True, written


def _recorded(factory: sessionmaker[Session], job_id: int) -> set[str]:
    with session_scope(factory) as session:
        return recorded_suites(session, job_id)


def _finish(factory: sessionmaker[Session], job_id: int, attempt: int, status: str, values: dict[str, Any]) -> None:
    def write() -> bool:
        with session_scope(factory) as session:
            return finish_job(session, job_id, attempt, status, values)

    with_db_retry(write, f"job {job_id} finish")


def run_job(factory: sessionmaker[Session], settings: Settings, job_id: int, device: str | None = None) -> JobReport:
    """Claim job `job_id`, train it (resuming its folder), evaluate it, record its results, finish it."""
    t0 = time.perf_counter()
    out_dir = None
    with session_scope(factory) as session:
        exp_id = session.scalar(select(ExperimentJob.experiment_id).where(ExperimentJob.id == job_id))
    if exp_id is not None:
        out_dir = str(job_output_dir(settings.data_dir, exp_id, job_id))

    def claim() -> Any:
        with session_scope(factory) as session:
            return claim_job(session, job_id, settings.job_lease_s, out_dir)

    got = with_db_retry(claim, f"job {job_id} claim")
    if not got.ok:
        busy = got.reason is not None and "running elsewhere" in got.reason
        log.info("job %d: not started: %s", job_id, got.reason)
        return JobReport(job_id, "busy" if busy else "skipped", got.reason)
    hb = Heartbeat(factory, job_id, got.attempt, min(PROGRESS_EVERY_S, settings.job_lease_s / 3))
    hb.start()
    try:
        with session_scope(factory) as session:
            spec = job_spec(session, job_id, settings.data_dir)
        log.info(
            "job %d: attempt %d, seed %d, stages %s", job_id, got.attempt, spec.seed, [len(s) for s in spec.stages]
        )
        params = TrainParams.model_validate(spec.train_params)
        trained = train_model(
            spec.base_model,
            spec.stages,
            spec.out_dir,
            params=params,
            seed=spec.seed,
            device=device,
            on_progress=hb.on_progress,
            should_stop=hb.should_stop,
        )
        if trained.status != "done" or trained.model_dir is None:
            return JobReport(job_id, "stopped", "cancelled during training", time.perf_counter() - t0)
        hb.update(phase="evaluating", step=trained.steps, total_steps=trained.steps, eta_s=0.0)
        finished, written = _evaluate(factory, spec, trained.model_dir, device, hb)
        if not finished:
            return JobReport(job_id, "stopped", "cancelled during evaluation", time.perf_counter() - t0, written)
        hb.close()
        hb.beat_now()  # the last progress
        summary = {
            "base_identity": trained.base_identity,
            "params_key": trained.params_key,
            "steps": trained.steps,
            "train_loss": trained.train_loss,
            "stages": [
                {
                    "n_samples": s.n_samples,
                    "steps": s.steps,
                    "train_loss": s.train_loss,
                    "start_hash": s.start_hash,
                    "end_hash": s.end_hash,
                }
                for s in trained.stages
            ],
            "skipped": len(spec.skipped) + sum(len(s.skipped) for s in trained.stages),
        }
        _finish(
            factory,
            job_id,
            got.attempt,
            "done",
            {
                "phase": None,
                "step": trained.steps,
                "total_steps": trained.steps,
                "eta_s": 0.0,
                "model_dir": trained.model_dir,
                "adapter_dir": trained.adapter_dir,
                "summary": summary,
                "loss": trained.train_loss,
            },
        )
        seconds = time.perf_counter() - t0
        log.info("job %d: done in %.1f s (%d result rows written)", job_id, seconds, written)
        return JobReport(job_id, "done", None, seconds, written)
    except TRANSIENT_DB_ERRORS:
        raise  # the job stays running; its heartbeat goes stale and the next delivery takes it over
    except Exception as exc:
        log.exception("job %d failed", job_id)
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        try:
            _finish(factory, job_id, got.attempt, "failed", {"error": reason, "phase": None})
        except Exception:
            log.exception("job %d: could not record the failure", job_id)
        return JobReport(job_id, "failed", reason, time.perf_counter() - t0)
    finally:
        hb.close()


@app.task(bind=True, name=TRAIN_JOB_TASK, max_retries=None)
def train_job(self: Any, job_id: int) -> dict[str, Any]:
    """Run one experiment job (idempotent; acknowledged only when it returns)."""
    settings, factory = store()
    report = run_job(factory, settings, int(job_id), device=worker_device(settings))
    if report.status == "busy" and int(self.request.retries or 0) < BUSY_RETRIES:
        # Running elsewhere: a duplicate while that worker lives, or a worker just killed whose heartbeat is
        # not stale yet. Look again once the lease has run out.
        raise self.retry(countdown=settings.job_lease_s + 1.0, max_retries=BUSY_RETRIES)
    return asdict(report)
