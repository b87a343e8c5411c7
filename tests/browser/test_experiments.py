"""Experiments in a real headless Chromium against the live server and a real Celery worker training the tiny
offline LLaVA: a selection drawn and saved with the mouse becomes an experiment through "Train & compare with
random"; the Experiments page shows its jobs' progress moving, then the results (each arm beside its random
control with error bars, the delta with its CI and its verdict); cancel stops what is left; the selection links
back to the plane, where Explore marks it as tested."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.db import session_scope
from backend.ingest import IngestOptions, ingest
from frontend import ids
from qspace.synthetic import TASK_TYPES, make_svit_like
from tests.browser.conftest import DASH_UPDATE, Live, Traffic
from tests.queue_helpers import start_worker, stop_worker, wait_ready
from tests.seeding import add_runs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT = 30_000  # ms
STEP_DELAY_S = 1.0  # each optimizer step of the first seed: long enough to watch the progress move
SLOW_STEP_S = 4.0  # the second seed: slow enough to cancel it mid-job
N = 80


@dataclass
class Trainer:
    ds: int
    suite: str
    delay: Path  # the worker sleeps this file's seconds after each optimizer step while it exists
    log: Path


def write_suite(path: Path, images: list[Path], n: int = 20) -> None:
    """A 20-item multiple-choice suite with reference answers over the dataset's images, two item types."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        kind = "colour" if i % 2 else "count"
        options = ["It is red.", "It is blue.", "There are two shapes.", "There is one shape."]
        answer = i % 4
        lines.append(
            json.dumps(
                {
                    "id": f"q{i}",
                    "image": str(images[i % len(images)]),
                    "question": "What color is the shape?" if kind == "colour" else "How many shapes are there?",
                    "options": options,
                    "answer": answer,
                    "references": [options[answer]],
                    "type": kind,
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def trainer(live: Live, tmp_path: Path) -> Iterator[Trainer]:
    """A dataset of its own (scored, with the tiny LLaVA as its experiment base model), an eval suite in the data
    directory, and a real worker on the live server's broker that trains with slowed-down steps."""
    from workers.tiny_models import write_tiny_models

    name = f"xp-{uuid.uuid4().hex[:6]}"
    data = make_svit_like(live.root / name, n=N, seed=11, image_size=64)
    with session_scope(live.factory) as session:
        ds = ingest(
            session, IngestOptions(name=name, paths=[data / f"{t}.json" for t in TASK_TYPES], image_root=data)
        ).dataset_id
    add_runs(live.factory, ds, seed=5)
    llava = write_tiny_models(tmp_path / "tiny")["llava"]
    r = httpx.patch(f"{live.base_url}/api/datasets/{ds}", json={"experiment_base_model": str(llava)}, timeout=30)
    assert r.status_code == 200, r.text
    suite = f"ui-{name}"
    write_suite(live.settings.data_dir / "eval_suites" / f"{suite}.jsonl", sorted((data / "images").glob("*.jpg")))
    delay = tmp_path / "step-delay"
    delay.write_text(str(STEP_DELAY_S))
    log = tmp_path / "worker.log"
    env = {"QSPACE_TEST_STEP_DELAY_FILE": str(delay), "OMP_NUM_THREADS": "1"}
    worker = start_worker(live.settings, log, "ui-trainer", app="tests.slow_training_worker", env=env)
    try:
        wait_ready(worker, log, timeout=180)
        yield Trainer(ds, suite, delay, log)
    finally:
        stop_worker(worker)
        (live.settings.data_dir / "eval_suites" / f"{suite}.jsonl").unlink(missing_ok=True)
        with contextlib.suppress(httpx.HTTPError):
            httpx.delete(f"{live.base_url}/api/datasets/{ds}", timeout=60)


def job_steps(page: Any) -> dict[int, tuple[str, int]]:
    """{job id: (status, step)} from the jobs table."""
    rows = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('tr.xp-job')].map(tr => [
            tr.dataset.job,
            [tr.querySelector('.badge').textContent, Number(tr.querySelector('.xp-step').dataset.step)],
        ]))"""
    )
    return {int(job): (str(status), int(step)) for job, (status, step) in rows.items()}


def arms_figure(page: Any) -> list[dict[str, Any]]:
    """The traces the browser drew in the first arms-vs-control figure."""
    return page.evaluate(
        """() => (document.querySelector('.xp-arms-figure .js-plotly-plot').data || []).map(t => ({
            name: t.name, x: t.x, y: t.y, error_y: t.error_y || null}))"""
    )


def test_train_and_compare_from_a_saved_selection(page: Any, live: Live, trainer: Trainer, traffic: Traffic) -> None:
    # Explore: a region from the presets, saved with a name, then "Train & compare with random".
    page.goto(f"{live.base_url}/explore?ds={trainer.ds}")
    page.wait_for_selector("g.draglayer g.xy rect.nsewdrag", timeout=TIMEOUT)
    page.fill(f"#{ids.EX_TOP_PERCENT}", "40")
    page.press(f"#{ids.EX_TOP_PERCENT}", "Tab")
    page.click("button:has-text('DIQ')")
    page.wait_for_function(
        "() => { const e = document.querySelector('.sel-label'); return e && e.textContent.startsWith('DIQ'); }",
        timeout=TIMEOUT,
    )
    count = int(page.locator("#sel-count-value").get_attribute("data-count"))
    assert 16 < count <= N // 2, count  # two batches or more: 6+ optimizer steps over the quick preset's 3 epochs
    page.fill(f"#{ids.SEL_NAME}", "diq 40")
    page.click(f"#{ids.SEL_SAVE}")
    page.wait_for_selector(f"#{ids.SEL_STATUS} .alert-ok", timeout=TIMEOUT)
    saved_id = int(page.locator(f"#{ids.SEL_STATUS}").inner_text().split("#", 1)[1].split()[0])

    page.click(f"#{ids.XP_OPEN_SELECTION}")
    # The saved selection is the arm (matched by its recipe: nothing is saved again).
    page.wait_for_function(
        "([id, t]) => { const e = document.getElementById(id); return e && e.innerText.includes(t); }",
        arg=[ids.XP_DIALOG, f"selection #{saved_id} diq 40"],
        timeout=TIMEOUT,
    )
    assert page.input_value(f"#{ids.XP_FORM_BASE}").endswith("llava")  # the dataset's base model
    assert page.locator(f"#{ids.XP_FORM_SUITES} input[value='{trainer.suite}']").is_checked()
    page.fill(f"#{ids.XP_FORM_SEEDS}", "0, 1")
    page.click(f"#{ids.XP_FORM_START}")
    page.wait_for_selector(f"#{ids.XP_FORM_STATUS} .alert", timeout=TIMEOUT)
    status = page.locator(f"#{ids.XP_FORM_STATUS}").inner_text()
    assert "Experiment #" in status and "4 training jobs" in status, status
    exp_id = int(status.split("#", 1)[1].split()[0])
    exp = httpx.get(f"{live.base_url}/api/experiments/{exp_id}", timeout=30).json()
    assert [a["source_id"] for a in exp["arms"] if a["kind"] == "selection"] == [saved_id]
    assert len(httpx.get(f"{live.base_url}/api/datasets/{trainer.ds}/selections", timeout=30).json()) == 1

    # The Experiments page: the jobs' progress moves while the first seed trains.
    page.click("#xp-form-watch")
    page.wait_for_selector(f"#{ids.XP_JOBS} tr.xp-job", timeout=TIMEOUT)
    assert f"#{exp_id}" in page.locator(f"#{ids.XP_HEAD}").inner_text()
    seen: dict[int, list[int]] = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        steps = job_steps(page)
        for job, (_, step) in steps.items():
            if not seen.get(job) or seen[job][-1] != step:
                seen.setdefault(job, []).append(step)
        first_seed = [s for _, s in sorted(steps.items())[:2]]  # jobs go seed by seed
        if all(status == "done" for status, _ in first_seed) and page.locator(".xp-arms-figure").count():
            break
        page.wait_for_timeout(300)
    else:
        raise AssertionError(f"the first seed did not finish: {seen}\n{trainer.log.read_text()[-3000:]}")
    total = exp["jobs"][0]["total_steps"]
    assert total >= 6, total
    moving = [v for v in seen.values() if len([s for s in v if 0 < s < total]) >= 2]
    assert moving, f"no job's progress moved through intermediate steps: {seen} (of {total})"
    assert all(v == sorted(v) for v in seen.values()), seen

    # Results of the first seed: the arm and its random control with error bars, the delta with its CI.
    traces = arms_figure(page)
    named = {t["name"]: t for t in traces}
    assert {"arm", "random control"} <= set(named), traces
    assert named["arm"]["error_y"] is not None and named["random control"]["error_y"] is not None
    assert named["random control"]["x"][0].startswith("random control<br>of selection")
    rows = page.locator(f"#{ids.XP_RESULTS} .xp-verdicts .xp-verdict-row")
    deltas = page.locator(f"#{ids.XP_RESULTS} .xp-verdicts .xp-delta")
    assert rows.count() == 2  # accuracy and answer_loss: one arm each
    assert deltas.count() == page.locator(f"#{ids.XP_RESULTS} .xp-verdicts .xp-verdict").count() == 2
    for k in range(deltas.count()):  # never a delta without its CI, and each says what it means
        assert re.fullmatch(r"\S+ \[\S+, \S+\]", deltas.nth(k).inner_text()), deltas.nth(k).inner_text()
    labels = page.locator(f"#{ids.XP_RESULTS} .xp-verdicts .xp-verdict").all_inner_texts()
    assert all("random" in t for t in labels), labels
    assert page.locator(f"#{ids.XP_RESULTS} .xp-by-type").count() >= 1  # the suite's item types

    # Cancel while the second seed trains (slowly now).
    trainer.delay.write_text(str(SLOW_STEP_S))
    page.wait_for_function("() => [...document.querySelectorAll('tr.xp-job-running')].length > 0", timeout=2 * TIMEOUT)
    page.click(f"#{ids.XP_CANCEL}")
    page.wait_for_selector(f"#{ids.XP_HEAD} [data-status='cancelled']", timeout=TIMEOUT)
    assert "is cancelled" in page.locator(f"#{ids.XP_ALERT}").inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll('tr.xp-job-running, tr.xp-job-queued')].length === 0", timeout=TIMEOUT
    )
    assert page.locator(f"#{ids.XP_CANCEL}").is_hidden()
    final = httpx.get(f"{live.base_url}/api/experiments/{exp_id}", timeout=30).json()
    assert final["status"] == "cancelled"
    statuses = [j["status"] for j in final["jobs"]]  # seed by seed: the first seed done, the second cancelled
    assert statuses[:2] == ["done", "done"] and "cancelled" in statuses[2:], statuses
    page.wait_for_timeout(2500)  # the poll stopped: nothing is active
    polls = len(traffic.bodies_with_input(ids.XP_POLL))
    page.wait_for_timeout(2500)
    assert len(traffic.bodies_with_input(ids.XP_POLL)) == polls

    # Back to the plane: the arm opens its selection on Explore, region drawn; the saved list marks it.
    page.click(f"#{ids.XP_RESULTS} .xp-arm-link")
    page.wait_for_function(
        "() => { const e = document.querySelector('.sel-label'); return e && e.textContent.startsWith('Saved #'); }",
        timeout=TIMEOUT,
    )
    assert "diq 40" in page.locator(".sel-label").inner_text()
    assert int(page.locator("#sel-count-value").get_attribute("data-count")) == count
    page.wait_for_selector(f"#{ids.SEL_SAVED} .saved-row", timeout=TIMEOUT)
    assert page.locator(".tested-mark").count(), page.locator(f"#{ids.SEL_SAVED}").inner_html()
    assert f"experiment #{exp_id}" in page.locator(".tested-mark").first.inner_text()
    assert page.locator("g.shapelayer path").count() >= 1  # the region's outline
    assert not traffic.errors


@pytest.fixture
def suite(live: Live) -> Iterator[str]:
    """An eval suite in the live server's data directory (over the seeded dataset's images), removed after."""
    name = f"ui-form-{uuid.uuid4().hex[:6]}"
    path = live.settings.data_dir / "eval_suites" / f"{name}.jsonl"
    assert live.seeded.image_root is not None
    write_suite(path, sorted(live.seeded.image_root.rglob("*.jpg"))[:20])
    try:
        yield name
    finally:
        path.unlink(missing_ok=True)


def dialog_says(page: Any, text: str) -> None:
    page.wait_for_function(
        "([id, t]) => { const e = document.getElementById(id); return e && e.innerText.includes(t); }",
        arg=[ids.XP_DIALOG, text],
        timeout=TIMEOUT,
    )


def test_the_form_saves_the_selection_once_and_says_why_a_start_is_refused(
    page: Any, live: Live, suite: str, traffic: Traffic
) -> None:
    """No worker needed: the API refuses the experiment (no such base model) after the form saved the selection;
    a second start saves nothing more. On Curriculum, the curriculum built last is the arm."""
    ds = live.seeded.dataset_id

    def n_saved() -> int:
        return len(httpx.get(f"{live.base_url}/api/datasets/{ds}/selections", timeout=30).json())

    before = n_saved()
    page.goto(f"{live.base_url}/explore?ds={ds}")
    page.wait_for_selector("g.draglayer g.xy rect.nsewdrag", timeout=TIMEOUT)
    page.click("button:has-text('DIL')")
    page.wait_for_function(
        "() => { const e = document.querySelector('.sel-label'); return e && e.textContent.startsWith('DIL'); }",
        timeout=TIMEOUT,
    )
    page.click(f"#{ids.XP_OPEN_SELECTION}")
    dialog_says(page, "(saved when you start)")
    assert "no experiment base model" in page.locator(f"#{ids.XP_FORM_STATUS}").inner_text()
    assert page.locator(f"#{ids.XP_FORM_SUITES} input[value='{suite}']").is_checked()
    page.fill(f"#{ids.XP_FORM_BASE}", str(live.root / "no-such-model"))
    page.click(f"#{ids.XP_FORM_START}")
    page.wait_for_selector(f"#{ids.XP_FORM_STATUS} .alert-error", timeout=TIMEOUT)
    assert "base_model" in page.locator(f"#{ids.XP_FORM_STATUS}").inner_text()
    assert n_saved() == before + 1  # saved before the experiment was refused
    dialog_says(page, "DIL · top 5%")
    assert "saved when you start" not in page.locator(f"#{ids.XP_DIALOG}").inner_text()
    with page.expect_response(
        lambda r: DASH_UPDATE in r.url and r.request.post_data and ids.XP_FORM_START in r.request.post_data
    ):
        page.click(f"#{ids.XP_FORM_START}")
    page.wait_for_selector(f"#{ids.XP_FORM_STATUS} .alert-error", timeout=TIMEOUT)
    assert n_saved() == before + 1  # the second start saves nothing more
    page.click(f"#{ids.XP_FORM_CLOSE}")
    page.wait_for_selector(f"#{ids.XP_DIALOG}", state="hidden", timeout=TIMEOUT)
    page.wait_for_selector(f"#{ids.SEL_SAVED} :text('DIL · top 5%')", timeout=TIMEOUT)  # Explore's list has it

    # Curriculum: arriving builds nothing; the curriculum built last is the form's arm.
    page.click("a.nav-link:has-text('Curriculum')")
    page.wait_for_selector(f"#{ids.XP_OPEN_CURRICULUM}", timeout=TIMEOUT)
    page.wait_for_timeout(1500)
    assert page.locator(".cur-result").count() == 0
    page.click(f"#{ids.CU_BUILD}")
    page.wait_for_selector(".cur-result", timeout=TIMEOUT)
    built = int(page.locator(".cur-result").inner_text().split("#", 1)[1].split()[0])
    page.click(f"#{ids.XP_OPEN_CURRICULUM}")
    dialog_says(page, f"curriculum #{built}")
    assert not traffic.errors
