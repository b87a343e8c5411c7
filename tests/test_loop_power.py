"""The loop has power: before any selection's effect is believed, a known-good arm must beat a known-bad one.

On the demo's data (synthetic SVIT-like, one sample in four with a labelled defect), an experiment through the REST
API and a real Celery worker trains two equal-size arms from the demo LLaVA with its projector re-initialised (the
experiment base the demo uses): 300 defect-free samples against 300 defective ones, 3 seeds, the `quick` preset.
Scored on a held-out clean multiple-choice suite (colour and count items: the kinds the tiny model can read from an
image at all; shapes, positions and drawn words stay at chance even for the fully trained demo model), the clean
arm must win in every seed, and the paired bootstrap CI of clean - defective (items and seeds) must exclude 0.
Accuracy, not answer loss: answer loss separates the arms even for a model that ignores the image.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from backend.api.app import create_app
from backend.db import make_engine, make_session_factory
from backend.ingest import IngestOptions, ingest
from backend.migrate import upgrade
from backend.settings import Settings
from backend.task_types import load_prompts
from qspace.synthetic import make_eval_suite, make_svit_like, svit_task_files
from tests.queue_helpers import start_worker, stop_worker, wait_ready

pytestmark = pytest.mark.slow

ARM_SIZE = 300
SEEDS = [0, 1, 2]
DEFECTS = ["swapped_image", "shuffled", "wrong_fact", "truncated", "filler"]


@pytest.fixture(scope="module")
def base_model(demo_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.training.model import reinit_projector

    return reinit_projector(demo_models.llava, tmp_path_factory.mktemp("base") / "llava-reinit", seed=0)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Settings, Engine, int]]:
    data = make_svit_like(tmp_path / "svit", n=1600, seed=11, defect_rate=0.25)
    settings = Settings(data_dir=tmp_path / "data", image_roots=[tmp_path], data_roots=[tmp_path])
    settings.ensure_dirs()
    make_eval_suite(settings.data_dir / "eval_suites", n=500, seed=0, types=("colour", "count"))
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    with make_session_factory(engine)() as session:
        prompts = load_prompts(data / "task_type_prompts.json")
        report = ingest(
            session,
            IngestOptions(name="svit", paths=svit_task_files(data), image_root=data, task_type_from_file=True,
                          task_type_prompts=prompts),
        )  # fmt: skip
        session.commit()
    yield settings, engine, report.dataset_id
    engine.dispose()


def selection(api: TestClient, ds: int, name: str, defects: list[str]) -> int:
    body = {"name": name, "region": {"type": "all"}, "metadata": {"defect": defects}, "sample": {"n": ARM_SIZE, "seed": 0}}
    r = api.post(f"/api/datasets/{ds}/selections", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["count"] == ARM_SIZE
    return int(r.json()["id"])


def test_clean_arm_beats_defective_arm_in_every_seed(
    base_model: Path, world: tuple[Settings, Engine, int], tmp_path: Path
) -> None:
    settings, engine, ds = world
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log, "power", app="workers.celery_app", env={"OMP_NUM_THREADS": "1"})
    try:
        wait_ready(worker, log, timeout=120)
        with TestClient(create_app(settings, engine)) as api:
            clean = selection(api, ds, "clean", ["none"])
            defective = selection(api, ds, "defective", DEFECTS)
            [suite] = [s["name"] for s in api.get("/api/eval_suites").json()]
            req = {"name": "power", "base_model": str(base_model), "arms": [{"selection": clean}, {"selection": defective}],
                   "seeds": SEEDS, "control": "none", "train": {"preset": "quick"}, "eval": {"suites": [suite]}}  # fmt: skip
            r = api.post(f"/api/datasets/{ds}/experiments", json=req)
            assert r.status_code == 202, r.text
            exp_id = r.json()["id"]
            deadline = time.monotonic() + 900
            while (exp := api.get(f"/api/experiments/{exp_id}").json())["status"] not in ("done", "failed", "cancelled"):
                assert time.monotonic() < deadline, (exp["jobs"], log.read_text(errors="replace")[-3000:])
                time.sleep(1)
        assert exp["status"] == "done", (exp["jobs"], log.read_text(errors="replace")[-3000:])
    finally:
        stop_worker(worker)
    arm_of = {a["source_id"]: a["id"] for a in exp["arms"]}
    acc = {x["arm_id"]: x for x in exp["results"] if x["metric"] == "accuracy"}
    good, bad = acc[arm_of[clean]], acc[arm_of[defective]]
    assert len(good["per_seed"]) == len(bad["per_seed"]) == len(SEEDS)
    assert all(g > b for g, b in zip(good["per_seed"], bad["per_seed"], strict=True)), (good, bad)
    [contrast] = [c for c in exp["contrasts"] if c["metric"] == "accuracy"]
    sign = 1 if contrast["arm_id"] == arm_of[clean] else -1
    lo = min(sign * v for v in contrast["ci"])
    assert sign * contrast["mean"] > 0 and lo > 0, contrast
    assert contrast["ci_includes_zero"] is False and contrast["n_items"] == 500 and contrast["seeds"] == SEEDS
