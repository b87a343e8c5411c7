"""What the explore page waits for and what the Datasets page lists of a dataset's background work, in words."""

from __future__ import annotations

from typing import Any

from frontend.pages.pending import awaited, jobs_to_show

PAPER = {"clip": "1:similarity", "loss": "2:loss_sum"}


def run(id_: int, kind: str, status: str, done: int = 0, total: int = 100) -> Any:
    return {"id": id_, "kind": kind, "status": status, "done": done, "total": total}


def job(id_: int, status: str, done: int = 0, total: int = 0, kind: str = "demo_models") -> Any:
    return {"id": id_, "kind": kind, "status": status, "done": done, "total": total}


def test_nothing_pending_means_nothing_awaited() -> None:
    assert awaited({}, [], [], resolvable=False) == []  # the page says "nothing scored yet" instead
    assert awaited(PAPER, [run(1, "clip", "done"), run(2, "mllm_loss", "done")], [], resolvable=True) == []


def test_an_unresolvable_plane_waits_for_everything_pending() -> None:
    parts = awaited({}, [run(3, "length", "running", 40)], [job(7, "running", 120, 300)], resolvable=False)
    assert parts == ["training the demo models 40%", "length run #3 40%"]
    assert awaited({}, [], [job(7, "queued")], resolvable=False) == ["training the demo models queued"]
    assert awaited({}, [], [job(7, "running")], resolvable=False) == ["training the demo models running"]


def test_a_drawable_plane_waits_only_for_the_papers_axes_still_coming() -> None:
    loss_only = {"loss": "2:loss_sum"}
    runs = [run(1, "clip", "queued"), run(2, "mllm_loss", "done"), run(3, "length", "running", 10)]
    assert awaited(loss_only, runs, [], resolvable=True) == ["clip run #1 queued"]
    # Both axes there: another run (even a newer clip) does not hold the plane back, nor does a job.
    assert awaited(PAPER, [*runs, run(4, "clip", "running", 5)], [job(8, "running", 1, 2)], resolvable=True) == []
    # A job that will post the missing runs is waited for; a job of another kind is not.
    assert awaited(loss_only, [], [job(8, "running", 1, 2)], resolvable=True) == ["training the demo models 50%"]
    assert awaited(loss_only, [], [job(9, "running", kind="ingest")], resolvable=True) == []


def test_the_datasets_page_lists_active_jobs_and_a_kinds_newest_failure() -> None:
    jobs = [job(1, "failed"), job(2, "done"), job(3, "running"), job(4, "failed", kind="ingest"), job(5, "cancelled")]
    assert [j["id"] for j in jobs_to_show(jobs)] == [4, 3]  # demo_models' newest is cancelled: its failure is old
    assert [j["id"] for j in jobs_to_show([job(1, "done"), job(2, "failed")])] == [2]
