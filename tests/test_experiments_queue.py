"""Experiments through the real queue: a Celery worker process on the server-less SQLite broker trains and
evaluates the tiny offline LLaVA. Two arms x two seeds plus their controls complete; the same seed gives the
same metrics twice; a worker SIGKILLed mid-job is replaced, the job resumes from its checkpoint, finishes, and its
result is stored once."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.db import make_engine, make_session_factory
from backend.migrate import upgrade
from backend.models import ExperimentJob, ExperimentResult
from backend.settings import Settings
from tests.queue_helpers import COLORS, ingest_dataset, start_worker, stop_worker, wait_ready, write_dataset

pytestmark = pytest.mark.slow

# Small and quick: full fine-tuning of the tiny model, 2 epochs of 2 batches (4 steps), a checkpoint every step.
TRAIN = {"preset": "quick", "epochs": 2, "batch_size": 4, "checkpoint_every": 1}


def write_suite(path: Path, images: Path, n: int = 8) -> Path:
    """Multiple choice over colours on the dataset's own square images, with reference answers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        colour = COLORS[i % len(COLORS)]
        options = [colour, *[c for c in COLORS if c != colour][:3]]
        lines.append(json.dumps({
            "id": f"q{i}", "image": str(images / f"{i:05d}.png"), "question": "What color is the square?",
            "options": options, "answer": 0, "references": [f"The square is {colour}."],
            "type": "warm" if colour in ("red", "yellow", "orange") else "cool",
        }))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.tiny_models import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("tiny"))["llava"]


@pytest.fixture
def qsettings(tmp_path: Path) -> Settings:
    suite = write_suite(tmp_path / "suites" / "colours.jsonl", tmp_path / "ds" / "images")
    s = Settings(
        data_dir=tmp_path / "data", image_roots=[tmp_path], data_roots=[tmp_path], eval_suites=[suite], job_lease_s=3.0
    )
    s.ensure_dirs()
    return s


@pytest.fixture
def qengine(qsettings: Settings) -> Iterator[Engine]:
    engine = make_engine(qsettings.sqlalchemy_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def qfactory(qengine: Engine) -> sessionmaker[Session]:
    return make_session_factory(qengine)


def wait_experiment(api: TestClient, exp_id: int, log: Path, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = api.get(f"/api/experiments/{exp_id}").json()
        if out["status"] in ("done", "failed", "cancelled"):
            assert out["status"] == "done", (out["jobs"], log.read_text(errors="replace")[-4000:])
            return out
        time.sleep(0.5)
    raise AssertionError(f"experiment {exp_id} not done after {timeout} s:\n{log.read_text(errors='replace')[-4000:]}")


def results_of(factory: sessionmaker[Session], job_id: int) -> dict[str, tuple[float | None, list[Any]]]:
    with factory() as s:
        rows = s.scalars(select(ExperimentResult).where(ExperimentResult.job_id == job_id))
        return {r.metric: (r.value, r.outcomes["values"]) for r in rows}


def test_experiment_completes_through_a_real_worker_and_resumes_after_sigkill(
    llava: Path, qsettings: Settings, qengine: Engine, qfactory: sessionmaker[Session], tmp_path: Path
) -> None:
    ds = ingest_dataset(qfactory, write_dataset(tmp_path / "ds", 30), "colours")
    logs = tmp_path / "logs"
    logs.mkdir()
    delay = tmp_path / "step-delay"
    env = {"QSPACE_TEST_STEP_DELAY_FILE": str(delay), "QSPACE_TEST_LOG_DIR": str(logs), "OMP_NUM_THREADS": "1"}
    log = tmp_path / "worker.log"
    worker = start_worker(qsettings, log, "trainer", app="tests.slow_training_worker", env=env)
    try:
        wait_ready(worker, log, timeout=120)
        with TestClient(create_app(qsettings, qengine)) as api:
            sel = [
                api.post(f"/api/datasets/{ds}/selections",
                         json={"name": f"arm{k}", "region": {"type": "all"}, "sample": {"n": 8, "seed": k}}).json()["id"]
                for k in (1, 2)
            ]  # fmt: skip
            req = {"name": "two-arms", "base_model": str(llava), "arms": [{"selection": i} for i in sel],
                   "seeds": [0, 1], "control": "random", "train": TRAIN, "eval": {"suites": ["colours"]}}  # fmt: skip
            r = api.post(f"/api/datasets/{ds}/experiments", json=req)
            assert r.status_code == 202, r.text
            exp = wait_experiment(api, r.json()["id"], log)
            assert len(exp["arms"]) == 4 and len(exp["jobs"]) == 8
            assert all(j["status"] == "done" and j["step"] == j["total_steps"] == 4 for j in exp["jobs"])
            assert all(Path(j["model_dir"], "config.json").is_file() for j in exp["jobs"])
            results = {(x["arm_id"], x["metric"]): x for x in exp["results"]}
            assert len(results) == 4 * 2
            treated = [a for a in exp["arms"] if a["kind"] == "selection"]
            for arm in treated:
                acc = results[(arm["id"], "accuracy")]
                assert len(acc["per_seed"]) == 2 and acc["delta"]["vs_arm_id"] != arm["id"]
                assert set(acc["by_type"]) == {"warm", "cool"}
            assert len([c for c in exp["contrasts"] if c["metric"] == "answer_loss"]) == 1
            first = next(j for j in exp["jobs"] if j["arm_id"] == treated[0]["id"] and j["seed"] == 0)
            reference = results_of(qfactory, first["id"])

            # The same arm and seed again (another experiment), killed mid-training: the worker dies with it.
            delay.write_text("1.0")
            again = {**req, "name": "killed", "arms": [{"selection": sel[0]}], "seeds": [0], "control": "none"}
            killed = api.post(f"/api/datasets/{ds}/experiments", json=again).json()
            [job] = killed["jobs"]
            out_dir = qsettings.data_dir / "experiments" / str(killed["id"]) / str(job["id"])
            deadline = time.monotonic() + 120
            while not list(out_dir.glob("stage-0/checkpoint-*/trainer_state.json")):  # a complete checkpoint
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
                time.sleep(0.05)
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
            delay.unlink()
            with qfactory() as s:
                left = s.get(ExperimentJob, job["id"])
                assert left is not None and left.status == "running" and left.attempts == 1 and left.step < 4
            assert results_of(qfactory, job["id"]) == {}

            log2 = tmp_path / "worker2.log"
            worker = start_worker(qsettings, log2, "trainer2", app="tests.slow_training_worker", env=env)
            wait_ready(worker, log2, timeout=120)
            time.sleep(qsettings.job_lease_s)  # the dead worker's heartbeat goes stale
            r = api.post(f"/api/datasets/{ds}/experiments", json=again)  # posting again resumes it
            assert r.status_code == 202 and r.json()["id"] == killed["id"]
            done = wait_experiment(api, killed["id"], log2)
        [job] = done["jobs"]
        assert job["attempts"] == 2 and job["step"] == 4
        # The second worker resumed from the checkpoint: the first step it reported comes after the kill.
        steps = {p.stem: [int(x) for x in p.read_text().split()] for p in logs.glob("steps-*.log")}
        resumed = [v for v in steps.values() if v and v[0] > 1]
        assert resumed, steps
        # Stored once, and the same seed gave the same metrics (and per-item outcomes) as the uninterrupted job.
        with qfactory() as s:
            n = s.scalar(select(func.count()).select_from(ExperimentResult).where(ExperimentResult.job_id == job["id"]))
        assert n == 2
        got = results_of(qfactory, job["id"])
        assert got["accuracy"] == reference["accuracy"]
        assert got["answer_loss"][0] == pytest.approx(reference["answer_loss"][0], rel=1e-5)
        assert got["answer_loss"][1] == pytest.approx(reference["answer_loss"][1], rel=1e-5)
    finally:
        stop_worker(worker)
