"""The run service on SQLite and PostgreSQL: chunking, resume, idempotent upsert, progress/ETA, cancel."""

from __future__ import annotations

import math
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.datasets import get_dataset
from backend.models import Dataset, Run, Sample, Score
from backend.queue import QueueUnavailable
from backend.queue.chunks import mark_running, prepare_chunk, score_items, upsert_scores
from backend.queue.progress import progress, update_rate
from backend.runs import (
    RunConflict,
    cancel_run,
    chunked,
    missing_sample_ids,
    plan_run,
    run_errors,
    submit_run,
)
from backend.scorer_specs import ScoreResult
from tests.queue_helpers import ingest_dataset, write_dataset

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Sink:
    """Records chunks instead of sending them; can fail after `fail_after` chunks."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[tuple[int, str, list[int]]] = []
        self.fail_after = fail_after

    def send_chunks(self, run_id: int, scorer_key: str, chunks: object) -> int:
        for ids in chunks:  # type: ignore[attr-defined]
            if self.fail_after is not None and len(self.sent) >= self.fail_after:
                raise QueueUnavailable("broker went away")
            self.sent.append((run_id, scorer_key, list(ids)))
        return len(self.sent)


@pytest.fixture
def dataset_id(session_factory: sessionmaker[Session], tmp_path: Path) -> int:
    return ingest_dataset(session_factory, write_dataset(tmp_path / "ds", 23), "ds")


def results_for(ids: list[int], tag: float = 1.0, errors: set[int] | None = None) -> list[ScoreResult]:
    errors = errors or set()
    return [
        ScoreResult(i, None, "image missing: x.png") if i in errors else ScoreResult(i, {"tokens": tag * i}, None)
        for i in ids
    ]


def new_run(session: Session, dataset_id: int, chunk_size: int = 5) -> tuple[Run, list[list[int]]]:
    plan = plan_run(session, get_dataset(session, dataset_id), "length", {}, chunk_size, now=T0)
    session.commit()
    return plan.run, plan.chunks


def test_chunked() -> None:
    assert chunked([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert chunked([], 3) == []
    with pytest.raises(ValueError):
        chunked([1], 0)


def test_new_run_is_split_into_chunks_in_dataset_order(session: Session, dataset_id: int) -> None:
    run, chunks = new_run(session, dataset_id, chunk_size=5)
    ids = list(session.scalars(select(Sample.id).where(Sample.dataset_id == dataset_id).order_by(Sample.position)))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    assert [i for c in chunks for i in c] == ids
    assert (run.status, run.total, run.done, run.errors, run.kind) == ("queued", 23, 0, 0, "length")
    assert run.params == {"model": None} and len(run.scorer_key) == 64
    # Posting it again while it is queued (and not stale) enqueues nothing and keeps the run.
    again = plan_run(session, get_dataset(session, dataset_id), "length", {"model": None}, 5, now=T0)
    assert again.run.id == run.id and again.chunks == [] and not again.created
    assert session.scalar(select(func.count()).select_from(Run)) == 1


def test_bad_kind_or_params_raise_value_error(session: Session, dataset_id: int) -> None:
    ds = get_dataset(session, dataset_id)
    with pytest.raises(ValueError, match="unknown scorer kind"):
        plan_run(session, ds, "nope", {}, 5)
    with pytest.raises(ValueError, match="length"):
        plan_run(session, ds, "length", {"bogus": 1}, 5)


def test_upsert_is_idempotent_under_redelivery(session_factory: sessionmaker[Session], dataset_id: int) -> None:
    with session_factory() as s:
        run, chunks = new_run(s, dataset_id)
    first = chunks[0]
    with session_factory() as s:
        rep = upsert_scores(s, run.id, results_for(first, errors={first[0]}), now=T0 + timedelta(seconds=5))
        s.commit()
    assert (rep.inserted, rep.errors, rep.status) == (5, 1, "running")
    # The same chunk delivered again (with different numbers, as a re-run could give) writes nothing.
    for _ in range(2):
        with session_factory() as s:
            rep = upsert_scores(s, run.id, results_for(first, tag=2.0), now=T0 + timedelta(seconds=6))
            s.commit()
        assert (rep.inserted, rep.errors) == (0, 0)
    # Overlapping redelivery: half old, half new.
    overlap = first[3:] + chunks[1][:2]
    with session_factory() as s:
        rep = upsert_scores(s, run.id, results_for(overlap), now=T0 + timedelta(seconds=7))
        s.commit()
    assert rep.inserted == 2
    with session_factory() as s:
        r = s.get(Run, run.id)
        assert r is not None and (r.done, r.errors) == (7, 1)
        rows = s.execute(select(Score.sample_id, Score.metrics, Score.error).where(Score.run_id == run.id)).all()
        assert len(rows) == 7 == len({sid for sid, _, _ in rows})
        kept = {sid: (m, e) for sid, m, e in rows}
        assert kept[first[0]] == (None, "image missing: x.png")
        assert kept[first[1]] == ({"tokens": 1.0 * first[1]}, None)  # the first write wins


def test_concurrent_overlapping_chunks_count_exactly(session_factory: sessionmaker[Session], dataset_id: int) -> None:
    """Several writers (as several workers would) with redelivered, overlapping chunks: no deadlock, exact counts."""
    with session_factory() as s:
        run, chunks = new_run(s, dataset_id, chunk_size=4)
    ids = [i for c in chunks for i in c]
    work = [ids[k : k + 6] for k in range(0, len(ids), 3)] * 2  # every id written 4 times, in overlapping sets
    failures: list[BaseException] = []

    def writer(part: list[list[int]]) -> None:
        try:
            for c in part:
                with session_factory() as s:
                    upsert_scores(s, run.id, results_for(c))
                    s.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(work[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    with session_factory() as s:
        r = s.get(Run, run.id)
        assert r is not None and (r.status, r.done, r.total, r.errors) == ("done", 23, 23, 0)
        assert s.scalar(select(func.count()).select_from(Score).where(Score.run_id == run.id)) == 23


def test_resume_scores_only_what_is_missing(session_factory: sessionmaker[Session], dataset_id: int) -> None:
    with session_factory() as s:
        run, chunks = new_run(s, dataset_id)
        upsert_scores(s, run.id, results_for(chunks[0] + chunks[2], errors={chunks[2][0]}))
        s.commit()
        cancel_run(s, s.get(Run, run.id))  # type: ignore[arg-type]
        s.commit()
    with session_factory() as s:
        plan = plan_run(s, get_dataset(s, dataset_id), "length", {}, 5)
        s.commit()
        assert plan.run.id == run.id and not plan.created
        assert [i for c in plan.chunks for i in c] == chunks[1] + chunks[3] + chunks[4]
        assert (plan.run.status, plan.run.done, plan.run.errors, plan.run.total) == ("queued", 10, 1, 23)
        assert plan.run.started_at is None and plan.run.finished_at is None
        for c in plan.chunks:
            upsert_scores(s, run.id, results_for(c))
            s.commit()
        r = s.get(Run, run.id)
        assert r is not None and (r.status, r.done, r.errors) == ("done", 23, 1)
        assert r.message == "1 sample(s) could not be scored" and r.finished_at is not None
    with session_factory() as s:  # a finished run posted again: nothing to do
        plan = plan_run(s, get_dataset(s, dataset_id), "length", {}, 5)
        assert plan.chunks == [] and plan.run.status == "done"
        assert missing_sample_ids(s, plan.run) == []


def test_stale_active_run_is_enqueued_again(session_factory: sessionmaker[Session], dataset_id: int) -> None:
    with session_factory() as s:
        run, chunks = new_run(s, dataset_id)
        mark_running(s, run.id, now=T0)
        upsert_scores(s, run.id, results_for(chunks[0]), now=T0 + timedelta(seconds=10))
        s.commit()
        fresh = plan_run(s, get_dataset(s, dataset_id), "length", {}, 5, stale_s=60, now=T0 + timedelta(seconds=30))
        assert fresh.chunks == []
        stale = plan_run(s, get_dataset(s, dataset_id), "length", {}, 5, stale_s=60, now=T0 + timedelta(seconds=300))
        assert [i for c in stale.chunks for i in c] == [i for c in chunks[1:] for i in c]
        assert stale.run.status == "running" and "without progress" in (stale.run.message or "")


def test_submit_leaves_nothing_behind_when_the_queue_fails(
    session_factory: sessionmaker[Session], dataset_id: int
) -> None:
    def down() -> None:
        raise QueueUnavailable("no broker")

    with session_factory() as s, pytest.raises(QueueUnavailable):
        submit_run(s, Sink(), dataset_id, "length", {}, 5, check=down)
    sink = Sink(fail_after=2)  # the broker dies after two chunks were sent
    with session_factory() as s, pytest.raises(QueueUnavailable):
        submit_run(s, sink, dataset_id, "length", {}, 5)
    assert len(sink.sent) == 2
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 0
        # The orphaned chunks find no run and are skipped.
        work = prepare_chunk(s, sink.sent[0][0], sink.sent[0][1], sink.sent[0][2])
        assert work.skip_reason is not None and work.items == []
    # A resumed run keeps its previous state when enqueueing fails.
    with session_factory() as s:
        run = submit_run(s, Sink(), dataset_id, "length", {}, 5)
        cancel_run(s, run)
        s.commit()
    with session_factory() as s, pytest.raises(QueueUnavailable):
        submit_run(s, Sink(fail_after=0), dataset_id, "length", {}, 5)
    with session_factory() as s:
        r = s.get(Run, run.id)
        assert r is not None and r.status == "cancelled" and (r.message or "").startswith("not resumed")
    with session_factory() as s:
        sink = Sink()
        resumed = submit_run(s, sink, dataset_id, "length", {}, 5)
        assert resumed.id == run.id and resumed.status == "queued" and len(sink.sent) == 5


def test_cancel(session_factory: sessionmaker[Session], dataset_id: int) -> None:
    with session_factory() as s:
        run, chunks = new_run(s, dataset_id)
        cancel_run(s, run)
        s.commit()
        assert run.status == "cancelled" and run.finished_at is not None
        assert cancel_run(s, run).status == "cancelled"  # idempotent
        work = prepare_chunk(s, run.id, run.scorer_key, chunks[0])
        assert work.skip_reason == f"run {run.id} is cancelled" and work.items == []
        # A chunk that was already being scored still stores its (valid) results; the run stays cancelled.
        rep = upsert_scores(s, run.id, results_for(chunks[0]))
        s.commit()
        assert (rep.inserted, rep.status) == (5, "cancelled")
        # A finished run cannot be cancelled.
        plan = plan_run(s, get_dataset(s, dataset_id), "length", {}, 100)
        upsert_scores(s, run.id, results_for(plan.chunks[0]))
        s.commit()
        assert s.get(Run, run.id).status == "done"  # type: ignore[union-attr]
        with pytest.raises(RunConflict, match="already done"):
            cancel_run(s, s.get(Run, run.id))  # type: ignore[arg-type]


def test_progress_rate_and_eta(session_factory: sessionmaker[Session], dataset_id: int) -> None:
    with session_factory() as s:
        run, chunks = new_run(s, dataset_id)
        assert progress(run) == (None, None)
        mark_running(s, run.id, now=T0)
        s.commit()
        upsert_scores(s, run.id, results_for(chunks[0]), now=T0 + timedelta(seconds=1), window_s=30)
        s.commit()
        s.refresh(run)
        rate, eta = progress(run, now=T0 + timedelta(seconds=1), tau=30)
        assert rate is not None and rate == pytest.approx(5.0, rel=0.02)  # 5 samples in the first second
        assert eta == pytest.approx(18 / rate)
        upsert_scores(s, run.id, results_for(chunks[1]), now=T0 + timedelta(seconds=2), window_s=30)
        s.commit()
        s.refresh(run)
        rate, eta = progress(run, now=T0 + timedelta(seconds=2), tau=30)
        assert rate is not None and rate == pytest.approx(5.0, rel=0.03) and eta == pytest.approx(13 / rate)
        # Stalled for longer than the window: the rate decays and the ETA grows.
        late_rate, late_eta = progress(run, now=T0 + timedelta(seconds=2 + 90), tau=30)
        assert late_rate is not None and late_eta is not None
        assert late_rate == pytest.approx(rate * math.exp(-2), rel=1e-6) and late_eta > eta  # type: ignore[operator]
        for c in chunks[2:]:
            upsert_scores(s, run.id, results_for(c), now=T0 + timedelta(seconds=3))
        s.commit()
        s.refresh(run)
        assert run.status == "done" and progress(run)[1] == 0.0


def test_rate_estimate_follows_a_steady_stream() -> None:
    # 10 samples every second for 5 minutes: the estimate is 10/s from the first update on.
    rate = None
    for k in range(1, 301):
        rate = update_rate(rate, elapsed_prev=k - 1, gap=1.0, n=10, elapsed_now=k, tau=30)
        assert rate == pytest.approx(10.0, rel=0.06)
    # Then twice as fast: after a few windows the estimate has moved to 20/s.
    for k in range(301, 451):
        rate = update_rate(rate, elapsed_prev=k - 1, gap=1.0, n=20, elapsed_now=k, tau=30)
    assert rate == pytest.approx(20.0, rel=0.02)


def test_non_finite_metrics_become_errors(session_factory: sessionmaker[Session], dataset_id: int) -> None:
    with session_factory() as s:
        run, chunks = new_run(s, dataset_id)
        a, b = chunks[0][:2]
        upsert_scores(s, run.id, [ScoreResult(a, {"loss": float("inf")}, None), ScoreResult(b, None, None)])
        s.commit()
        rows = dict(s.execute(select(Score.sample_id, Score.error).where(Score.run_id == run.id)).all())
        assert rows[a] == "non-finite metric(s): loss=inf" and rows[b] == "no result"
        page = run_errors(s, s.get(Run, run.id))  # type: ignore[arg-type]
        assert page.total == 2 and page.reasons == {"non-finite metric(s)": 1, "no result": 1}
        assert [i.sample_id for i in page.items] == sorted([a, b])


def test_score_items_resolves_images_and_reports_bad_ones(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.png").write_bytes(b"png")
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"png")
    os.symlink(outside, root / "link.png")
    ds = Dataset(id=1, name="d", image_root=str(root))
    conv = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]

    def sample(i: int, image: object) -> Sample:
        return Sample(id=i, dataset_id=1, position=i, external_id=str(i), image=image, conversations=conv)

    samples = [
        sample(1, "ok.png"),
        sample(2, "missing.png"),
        sample(3, "../secret.png"),
        sample(4, "link.png"),
        sample(5, None),
        sample(6, ["ok.png", "ok.png"]),
    ]
    items, failed = score_items(ds, samples, uses_images=True)
    assert [(i.sample_id, i.images) for i in items] == [
        (1, [str(root / "ok.png")]),
        (5, []),
        (6, [str(root / "ok.png")] * 2),
    ]
    assert items[0].conversations == conv
    errors = {r.sample_id: r.error or "" for r in failed}
    assert errors[2] == "image missing: missing.png"
    assert errors[3].startswith("image refused") and errors[4].startswith("image refused")
    # Scorers that read only text do not care about images.
    items, failed = score_items(ds, samples, uses_images=False)
    assert len(items) == 6 and failed == [] and all(i.images == [] for i in items)
    # No image root at all.
    items, failed = score_items(Dataset(id=2, name="e", image_root=None), samples[:1], uses_images=True)
    assert items == [] and "no image root" in (failed[0].error or "")


def test_prepare_chunk_skips_done_samples_and_stale_messages(
    session_factory: sessionmaker[Session], dataset_id: int
) -> None:
    with session_factory() as s:
        run, chunks = new_run(s, dataset_id)
        upsert_scores(s, run.id, results_for(chunks[0][:2]))
        s.commit()
        work = prepare_chunk(s, run.id, run.scorer_key, chunks[0])
        assert work.skip_reason is None and work.already_done == 2
        assert [i.sample_id for i in work.items] == chunks[0][2:]
        stale = prepare_chunk(s, run.id, "0" * 64, chunks[0])
        assert stale.skip_reason is not None and "another scorer key" in stale.skip_reason


def test_process_chunk_with_the_length_scorer(session_factory: sessionmaker[Session], dataset_id: int) -> None:
    """The worker's chunk function in-process: scores, skips what is done, and a repeat writes nothing."""
    from backend.settings import Settings
    from workers.tasks import process_chunk

    settings = Settings()
    with session_factory() as s:
        run, chunks = new_run(s, dataset_id, chunk_size=10)
    first = process_chunk(session_factory, settings, run.id, run.scorer_key, chunks[0])
    assert (first.scored, first.inserted, first.errors, first.status) == (10, 10, 0, "running")
    again = process_chunk(session_factory, settings, run.id, run.scorer_key, chunks[0])
    assert (again.already_done, again.scored, again.inserted) == (10, 0, 0)
    for c in chunks[1:]:
        last = process_chunk(session_factory, settings, run.id, run.scorer_key, c)
    assert last.status == "done"
    with session_factory() as s:
        metrics = s.scalars(select(Score.metrics).where(Score.run_id == run.id)).all()
        assert len(metrics) == 23 and all(m and m["answer_words"] >= 4 for m in metrics)
