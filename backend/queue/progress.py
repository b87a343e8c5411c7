"""A run's statuses, clock and progress: the counters and the throughput estimate both sides of the queue share.

Workers advance a run (:mod:`backend.queue.chunks`), the API reads it (:mod:`backend.runs`); both use the
statuses, the UTC clock and the exact recount from here, so neither imports the other.

Throughput is an exponentially weighted rate over the last ``progress_window_s`` seconds (the time constant),
kept in the run row so that every worker of a run contributes to one figure.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.models import Run, Sample, Score

ACTIVE = ("queued", "running")
TERMINAL = ("done", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)


def seconds_between(a: datetime | None, b: datetime | None) -> float | None:
    a, b = aware(a), aware(b)
    if a is None or b is None:
        return None
    return (b - a).total_seconds()


def recount(session: Session, run: Run) -> None:
    """Set total, done and errors from the tables (exact; used on resume and at completion)."""
    run.total = session.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == run.dataset_id)) or 0
    done, errors = session.execute(
        select(func.count(), func.count(Score.error)).select_from(Score).where(Score.run_id == run.id)
    ).one()
    run.done, run.errors = int(done or 0), int(errors or 0)


def _weight(t: float, tau: float) -> float:
    """Mass of the exponential kernel over a history `t` seconds long (corrects the estimate's start)."""
    return -math.expm1(-max(t, 0.0) / tau)


def update_rate(
    prev_rate: float | None, elapsed_prev: float, gap: float, n: int, elapsed_now: float, tau: float
) -> float | None:
    """The exponentially weighted samples/s after `n` more samples arrived `gap` seconds after the last update.

    The decayed sum S = sum(n_i * exp(-(now - t_i) / tau)) / tau estimates the rate; dividing by the kernel's
    mass since the run started removes the bias of a young run (so the first chunk reads n / its duration).
    """
    if elapsed_now < 1e-3:
        return prev_rate
    s = (prev_rate or 0.0) * _weight(elapsed_prev, tau)
    s = s * math.exp(-max(gap, 0.0) / tau) + n / tau
    return s / _weight(elapsed_now, tau)


def progress(run: Run, now: datetime | None = None, tau: float = 30.0) -> tuple[float | None, float | None]:
    """(samples_per_s, eta_s) of `run` as of `now`.

    A running run that has reported nothing for longer than the window shows a decaying rate (so the ETA of a
    stalled run grows); a finished run keeps its last rate and an ETA of 0.
    """
    rate = run.samples_per_s
    if run.status == "done":
        return rate, 0.0
    if run.status != "running" or rate is None:
        return rate, None
    gap = seconds_between(run.updated_at, now or utcnow()) or 0.0
    if gap > tau:
        rate *= math.exp(-(gap - tau) / tau)
    remaining = max(run.total - run.done, 0)
    eta = remaining / rate if rate > 1e-9 else None
    return rate, eta
