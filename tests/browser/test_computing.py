"""While the scores are still being computed (the served demo trains its models, then scores): the explore page
says what is still going on instead of an empty plane and draws the plane by itself, without a reload, when the
work ends; the Datasets page lists the background job with a progress bar next to the runs, and cancels it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from backend import jobs
from backend.db import session_scope
from backend.ingest import IngestOptions, ingest
from backend.models import Run
from frontend import ids
from qspace.synthetic import TASK_TYPES, make_svit_like
from tests.browser.conftest import Live, Traffic
from tests.seeding import add_runs

pytestmark = pytest.mark.browser

TIMEOUT = 20_000  # ms
N = 48


@dataclass
class Computing:
    ds: int
    job: int


@pytest.fixture
def computing(live: Live) -> Iterator[Computing]:
    """A dataset of its own with a `demo_models` job 40% through and nothing scored yet (removed after)."""
    name = f"computing-{uuid.uuid4().hex[:6]}"
    data = make_svit_like(live.root / name, n=N, seed=4, image_size=64)
    with session_scope(live.factory) as session:
        ds = ingest(
            session, IngestOptions(name=name, paths=[data / f"{t}.json" for t in TASK_TYPES], image_root=data)
        ).dataset_id
        job = jobs.create_job(session, "demo_models", dataset_id=ds, total=300, unit="step").id
    jobs.JobProgress(live.factory, job, every_s=0).step(120, 300)
    try:
        yield Computing(ds, job)
    finally:
        httpx.delete(f"{live.base_url}/api/datasets/{ds}", timeout=30)


def set_run(live: Live, run_id: int, status: str, done: int) -> None:
    with session_scope(live.factory) as session:
        session.execute(update(Run).where(Run.id == run_id).values(status=status, done=done, total=N))


def wait_status(page: Any, text: str) -> str:
    page.wait_for_function(
        "([id, t]) => { const e = document.getElementById(id); return e && e.textContent.includes(t); }",
        arg=[ids.EX_WAIT_STATUS, text],
        timeout=TIMEOUT,
    )
    return str(page.locator(f"#{ids.EX_WAIT_STATUS}").inner_text())


def test_explore_says_what_is_computing_and_draws_the_plane_without_a_reload(
    page: Any, live: Live, computing: Computing, traffic: Traffic
) -> None:
    page.goto(f"{live.base_url}/explore?ds={computing.ds}")
    text = wait_status(page, "training the demo models 40%")
    assert text.startswith("still computing:"), text
    assert page.locator(f"#{ids.EX_GRAPH}").count() == 0  # no empty plane
    assert page.locator(f"#{ids.EX_WAIT_SHOW}").is_hidden()  # nothing to show yet
    page.evaluate("() => { window.__samePage = 1; }")  # gone if the page reloads

    # The job posts the runs and ends (the scores are stored, the runs not finished yet).
    clip_run, loss_run = add_runs(live.factory, computing.ds, seed=9)
    set_run(live, clip_run, "queued", 0)
    set_run(live, loss_run, "running", N // 2)
    with session_scope(live.factory) as session:
        assert jobs.finish(session, computing.job, "done")
    text = wait_status(page, f"clip run #{clip_run} queued")
    assert f"mllm_loss run #{loss_run} 50%" in text and "training" not in text, text

    # The loss run finishes first: the plane could be drawn from its metrics, but the clip axis is coming.
    set_run(live, loss_run, "done", N)
    set_run(live, clip_run, "running", N // 4)
    text = wait_status(page, f"clip run #{clip_run} 25%")
    assert "mllm_loss" not in text, text
    page.wait_for_selector(f"#{ids.EX_WAIT_SHOW}", state="visible", timeout=TIMEOUT)

    # The last run finishes: the plane replaces the waiting state, in the same page, and the polling stops.
    set_run(live, clip_run, "done", N)
    page.wait_for_selector(".gcard", timeout=TIMEOUT)
    page.wait_for_selector("g.draglayer g.xy rect.nsewdrag", timeout=TIMEOUT)
    assert page.evaluate("() => window.__samePage") == 1, "the page reloaded"
    assert page.locator(f"#{ids.EX_WAIT_STATUS}").count() == 0
    assert page.locator(f"#{ids.EX_WAIT_POLL}").count() == 0
    page.wait_for_function(
        "([id, t]) => { const e = document.getElementById(id); return e && e.textContent.includes(t); }",
        arg=[ids.EX_PLOT_INFO, f"{N:,} points"],
        timeout=TIMEOUT,
    )
    x_label = page.locator(f"#{ids.EX_X}").inner_text()
    y_label = page.locator(f"#{ids.EX_Y}").inner_text()
    assert "loss_sum" in x_label and "similarity" in y_label, (x_label, y_label)  # the paper's plane
    assert not traffic.errors, traffic.errors


def test_show_what_is_scored_so_far(page: Any, live: Live, computing: Computing) -> None:
    clip_run, _ = add_runs(live.factory, computing.ds, seed=9)
    set_run(live, clip_run, "running", N // 2)
    page.goto(f"{live.base_url}/explore?ds={computing.ds}")
    wait_status(page, f"clip run #{clip_run} 50%")
    page.click(f"#{ids.EX_WAIT_SHOW}")
    page.wait_for_selector(".gcard", timeout=TIMEOUT)
    assert "loss_sum" in page.locator(f"#{ids.EX_X}").inner_text()


def test_datasets_page_lists_the_job_with_a_moving_bar_and_cancels_it(
    page: Any, live: Live, computing: Computing, traffic: Traffic
) -> None:
    page.goto(f"{live.base_url}/datasets?ds={computing.ds}")
    row = page.locator(f"#job-{computing.job}")
    row.wait_for(timeout=TIMEOUT)
    assert "training the demo models" in row.inner_text() and "120 / 300 step" in row.inner_text()
    bar = row.locator(".progress")
    assert float(bar.get_attribute("aria-valuenow")) == 40.0
    progress = jobs.JobProgress(live.factory, computing.job, every_s=0)
    progress.step(210, 300)
    progress.say("  LLaVA epoch  3/6  answer-token loss 2.104  (61 s)")
    page.wait_for_function(
        "id => { const b = document.querySelector(`#job-${id} .progress`); "
        "return b && b.getAttribute('aria-valuenow') === '70.0'; }",
        arg=computing.job,
        timeout=TIMEOUT,
    )
    assert "LLaVA epoch 3/6" in row.inner_text()

    row.locator("button", has_text="Cancel").click()
    page.wait_for_selector(f"#{ids.RUNS_ALERT} .alert", timeout=TIMEOUT)
    assert f"Job #{computing.job} is cancelled" in page.locator(f"#{ids.RUNS_ALERT}").inner_text()
    page.wait_for_selector(f"#job-{computing.job}", state="detached", timeout=TIMEOUT)
    assert httpx.get(f"{live.base_url}/api/jobs/{computing.job}").json()["status"] == "cancelled"
    with pytest.raises(jobs.JobCancelled):  # the trainer would stop at its next progress write
        progress.step(211, 300)
    assert not traffic.errors, traffic.errors
