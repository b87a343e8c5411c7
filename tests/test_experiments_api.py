"""The experiment endpoints: shapes, controls, bad input (a clear 4xx that creates nothing), resume by posting
again, cancel, the API token, results with their statistics, the manifest and the CSV. Jobs go to a fake queue;
the worker side is simulated through backend.queue.jobs (tests/test_experiments_queue.py runs real workers)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.models import Experiment, ExperimentArm, ExperimentJob, ExperimentResult, Sample, Selection
from backend.queue import QueueUnavailable
from backend.queue.jobs import beat, claim_job, finish_job, record_suite
from backend.queue.progress import utcnow
from backend.settings import Settings
from tests.seeding import Seeded, seed_scored


class FakeQueue:
    """Stands in for backend.queue.TaskQueue: records the job ids it is given."""

    def __init__(self) -> None:
        self.jobs: list[int] = []
        self.down = False

    def check(self) -> None:
        if self.down:
            raise QueueUnavailable("the task queue at redis://nowhere is unreachable: refused")

    def send_train_jobs(self, job_ids: Iterable[int]) -> int:
        ids = list(job_ids)
        self.jobs += ids
        return len(ids)


def write_suite(path: Path, n: int = 12, bad_line: int | None = None) -> Path:
    """A text-only multiple-choice suite with item types (and reference answers on every third item)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        item: dict[str, Any] = {"id": f"q{i}", "question": f"Which colour, {i}?", "options": ["red", "blue", "green"],
                                "answer": i % 3, "type": ("colour", "shape")[i % 2]}
        if i % 3 == 0:
            item["references"] = ["It is red."]
        if bad_line is not None and i + 1 == bad_line:
            item["answer"] = 7
        lines.append(json.dumps(item))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_base(path: Path, model_type: str = "llava") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return path


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def xsettings(settings: Settings, tmp_path: Path) -> Settings:
    good = write_suite(tmp_path / "suites" / "colours.jsonl")
    bad = write_suite(tmp_path / "suites_bad" / "broken.jsonl", bad_line=3)
    write_suite(settings.data_dir / "eval_suites" / "builtin.jsonl", n=6)
    return settings.model_copy(update={"eval_suites": [good, bad], "job_lease_s": 5.0, "run_stale_s": 900.0})


@pytest.fixture
def app(xsettings: Settings, engine: Engine, queue: FakeQueue) -> Any:
    app = create_app(xsettings, engine)
    app.state.task_queue = queue
    return app


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def seeded(session_factory: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_scored(session_factory, tmp_path, n=160)


@pytest.fixture
def arms(client: TestClient, seeded: Seeded) -> dict[str, int]:
    """A filtered selection (two task types, top 30% on both axes) and a two-stage builder curriculum."""
    ds = seeded.dataset_id
    r = client.post(f"/api/datasets/{ds}/selections", json={
        "name": "top", "region": {"type": "top", "percent": 30, "axes": "both"},
        "task_types": ["conversation", "referring_qa"]})
    assert r.status_code == 201, r.text
    r2 = client.post(f"/api/datasets/{ds}/curricula", json={
        "name": "cur", "builder": {"stages": 2, "dx": 0.0, "dy": 0.0, "per_stage": 12, "seed": 3}})
    assert r2.status_code == 201, r2.text
    return {"selection": r.json()["id"], "curriculum": r2.json()["id"], "n_selection": r.json()["count"]}


def body(base: Path | str, refs: dict[str, int], **over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": "exp", "base_model": str(base),
        "arms": [{"selection": refs["selection"]}, {"curriculum": refs["curriculum"]}],
        "seeds": [0, 1], "control": "random", "train": {"preset": "quick", "epochs": 1, "batch_size": 4},
        "eval": {"suites": ["colours"]},
    }
    out.update(over)
    return out


def n_rows(factory: sessionmaker[Session]) -> tuple[int, int, int]:
    with factory() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) or 0  # type: ignore[return-value]
                     for t in (Experiment, ExperimentArm, ExperimentJob))


def job_ids_of(factory: sessionmaker[Session], job_id: int) -> list[int]:
    with factory() as s:
        job = s.get(ExperimentJob, job_id)
        assert job is not None
        return np.frombuffer(job.sample_ids, dtype="<i4").tolist()


# --- shapes and controls ---------------------------------------------------------------------------------


def test_eval_suites_lists_configured_and_data_dir_suites(client: TestClient, xsettings: Settings) -> None:
    suites = {s["name"]: s for s in client.get("/api/eval_suites").json()}
    assert set(suites) == {"colours", "broken", "builtin"}
    assert suites["colours"]["n_items"] == 12 and suites["colours"]["metrics"] == ["accuracy", "answer_loss"]
    assert suites["colours"]["types"] == ["colour", "shape"] and suites["colours"]["error"] is None
    assert suites["builtin"]["path"].startswith(str(xsettings.data_dir.resolve()))
    assert suites["broken"]["n_items"] == 0 and "broken.jsonl:3: answer:" in suites["broken"]["error"]


def test_create_experiment_shapes_and_controls(
    client: TestClient, queue: FakeQueue, arms: dict[str, int], tmp_path: Path, session_factory: sessionmaker[Session],
    seeded: Seeded,
) -> None:
    base = write_base(tmp_path / "base")
    r = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=body(base, arms))
    assert r.status_code == 202, r.text
    exp = r.json()
    assert set(exp) >= {"id", "dataset_id", "name", "status", "base_model", "seeds", "arms", "jobs", "results"}
    assert exp["status"] == "queued" and exp["seeds"] == [0, 1] and exp["results"] == []
    assert exp["base_model"] == str(base.resolve())
    kinds = [(a["kind"], a["control_of"]) for a in exp["arms"]]
    sel, sel_ctrl, cur, cur_ctrl = exp["arms"]
    assert kinds == [("selection", None), ("control", sel["id"]), ("curriculum", None), ("control", cur["id"])]
    assert sel["source_id"] == arms["selection"] and sel["n"] == sel_ctrl["n"] == arms["n_selection"]
    assert cur["stage_sizes"] == cur_ctrl["stage_sizes"] == [12, 12] and cur["n"] == 24
    assert sel_ctrl["label"] == f"control of selection {arms['selection']} (top)"
    jobs = exp["jobs"]
    assert len(jobs) == 8 and queue.jobs == [j["id"] for j in jobs]
    assert [j["seed"] for j in jobs] == [0, 0, 0, 0, 1, 1, 1, 1]  # seed by seed: every arm's first seed first
    assert all(j["status"] == "queued" and j["total_steps"] > 0 and j["model_dir"] is None for j in jobs)
    by = {(j["arm_id"], j["seed"]): j for j in jobs}
    # The selection arm trains the same samples for every seed; its control draws new ones per seed.
    assert job_ids_of(session_factory, by[(sel["id"], 0)]["id"]) == job_ids_of(session_factory, by[(sel["id"], 1)]["id"])
    c0 = job_ids_of(session_factory, by[(sel_ctrl["id"], 0)]["id"])
    c1 = job_ids_of(session_factory, by[(sel_ctrl["id"], 1)]["id"])
    assert c0 != c1 and len(c0) == len(c1) == arms["n_selection"]
    # Same population as the arm: its task types, no errored sample.
    with session_factory() as s:
        types = {t for (t,) in s.execute(select(Sample.task_type).where(Sample.id.in_(c0 + c1)))}
    assert types <= {"conversation", "referring_qa"} and not (set(c0 + c1) & seeded.errors)
    # A curriculum's control: as many stages of the same sizes, disjoint.
    with session_factory() as s:
        job = s.get(ExperimentJob, by[(cur_ctrl["id"], 0)]["id"])
        assert job is not None and job.stage_sizes == [12, 12]
        ids = np.frombuffer(job.sample_ids, dtype="<i4")
        assert len(set(ids.tolist())) == 24
    # Reproducible: another experiment (another name) draws the same control for the same seed.
    r = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=body(base, arms, name="again", seeds=[1]))
    assert r.status_code == 202
    again_sel = next(a for a in r.json()["arms"] if a["kind"] == "selection")
    again_ctrl = next(a for a in r.json()["arms"] if a["control_of"] == again_sel["id"])
    ctrl_job = next(j for j in r.json()["jobs"] if j["arm_id"] == again_ctrl["id"])
    assert job_ids_of(session_factory, ctrl_job["id"]) == c1
    listed = client.get(f"/api/datasets/{seeded.dataset_id}/experiments").json()
    assert [e["name"] for e in listed] == ["exp", "again"]
    assert client.get(f"/api/experiments/{exp['id']}").json()["jobs"] == jobs


def test_a_packed_selection_trains_as_a_plain_id_list(
    client: TestClient, queue: FakeQueue, tmp_path: Path, session_factory: sessionmaker[Session], seeded: Seeded,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from backend import id_lists
    from backend.models import Selection

    monkeypatch.setattr(id_lists, "PACK_FROM", 1)  # every saved list packed, as a 4,096+ sample one is
    ds = seeded.dataset_id
    sel = client.post(f"/api/datasets/{ds}/selections", json={"name": "all", "region": {"type": "all"}}).json()
    with session_factory() as s:
        row = s.get(Selection, sel["id"])
        assert row is not None and len(row.sample_ids) % 4 == 2  # stored packed
        want = id_lists.ids_from_bytes(row.sample_ids).tolist()
    refs = {"selection": sel["id"], "curriculum": 0}
    r = client.post(f"/api/datasets/{ds}/experiments", json=body(write_base(tmp_path / "base"), refs,
                                                                 arms=[{"selection": sel["id"]}], seeds=[0]))
    assert r.status_code == 202, r.text
    arm = next(a for a in r.json()["arms"] if a["kind"] == "selection")
    job = next(j for j in r.json()["jobs"] if j["arm_id"] == arm["id"])
    assert job_ids_of(session_factory, job["id"]) == want and len(want) == sel["count"]


def test_task_mix_control_matches_the_arms_task_types(
    client: TestClient, arms: dict[str, int], tmp_path: Path, session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    ds = seeded.dataset_id
    r = client.post(f"/api/datasets/{ds}/selections", json={"region": {"type": "top", "percent": 15, "axes": "y"}})
    sel = r.json()
    req = body(write_base(tmp_path / "base"), arms, arms=[{"selection": sel["id"]}], seeds=[4], control_task_mix=True)
    exp = client.post(f"/api/datasets/{ds}/experiments", json=req).json()
    ctrl = next(a for a in exp["arms"] if a["kind"] == "control")
    job = next(j for j in exp["jobs"] if j["arm_id"] == ctrl["id"])
    with session_factory() as s:
        rows = s.execute(select(Sample.task_type, func.count()).where(
            Sample.id.in_(job_ids_of(session_factory, job["id"]))).group_by(Sample.task_type))
        assert dict(rows.all()) == sel["by_task_type"]


# --- bad input -----------------------------------------------------------------------------------------------


def _bad_cases(tmp_path: Path, arms: dict[str, int], other_sel: int, empty_sel: int) -> list[tuple[Any, int, str]]:
    base = write_base(tmp_path / "base")
    nocfg = tmp_path / "nocfg"
    nocfg.mkdir(exist_ok=True)
    bert = write_base(tmp_path / "bert", model_type="bert")
    return [
        (body(base, arms, arms=[{"selection": 999999}]), 422, "selection 999999 not found"),
        (body(base, arms, arms=[{"curriculum": 999999}]), 422, "curriculum 999999 not found"),
        (body(base, arms, arms=[{"selection": other_sel}]), 422, "belongs to dataset"),
        (body(base, arms, arms=[{"selection": empty_sel}]), 422, "is empty"),
        (body(base, arms, arms=[{"selection": arms["selection"], "curriculum": arms["curriculum"]}]), 422, "arms.0"),
        (body(base, arms, arms=[]), 422, "arms"),
        (body(base, arms, seeds=[-1]), 422, "seeds"),
        (body(base, arms, seeds=[2**31]), 422, "seeds"),
        (body(base, arms, seeds=[1, 1]), 422, "unique"),
        (body(base, arms, seeds=list(range(11))), 422, "seeds"),
        (body(base, arms, seeds=[]), 422, "seeds"),
        (body(base, arms, eval={"suites": ["nope"]}), 422, "unknown suite 'nope'"),
        (body(base, arms, eval={"suites": ["broken"]}), 422, "broken.jsonl:3: answer:"),
        (body(base, arms, eval={"suites": []}), 422, "eval.suites"),
        (body(base, arms, train={"preset": "nope"}), 422, "train.preset"),
        (body(base, arms, train={"lr": -1}), 422, "train.lr"),
        (body(base, arms, train={"lora_r": 8}), 422, "train.lora_r"),
        (body(tmp_path / "missing", arms), 422, "no such local folder"),
        (body(nocfg, arms), 422, "no config.json"),
        (body(bert, arms), 422, "not a LLaVA-style model"),
        (body("not a model", arms), 422, "not a hub name"),
        (body(base, arms, base_model=None), 422, "base_model: none given"),
        (body(base, arms, control="sometimes"), 422, "control"),
        (body(base, arms, extra=1), 422, "extra"),
    ]


def test_bad_input_is_a_clear_4xx_and_creates_nothing(
    client: TestClient, arms: dict[str, int], tmp_path: Path, session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    (tmp_path / "other").mkdir()
    other = seed_scored(session_factory, tmp_path / "other", n=40, seed=5)
    other_sel = client.post(f"/api/datasets/{other.dataset_id}/selections", json={"region": {"type": "all"}}).json()["id"]
    with session_factory() as s:  # an empty saved selection (the API refuses to save one, old rows may exist)
        empty = Selection(dataset_id=seeded.dataset_id, name="empty", recipe={"region": {"type": "all"}}, count=0,
                          sample_ids=b"")
        s.add(empty)
        s.commit()
        empty_sel = empty.id
    (tmp_path / "base").mkdir(exist_ok=True)
    for req, status, words in _bad_cases(tmp_path, arms, other_sel, empty_sel):
        r = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=req)
        assert r.status_code == status and words in r.text, (req, r.status_code, r.text)
        assert r.json()["detail"]
    r = client.post("/api/datasets/424242/experiments", json=body(tmp_path / "base", arms))
    assert r.status_code == 404 and "dataset" in r.json()["detail"]
    r = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=body(tmp_path / "base", arms,
                                                                               eval={"suites": ["broken"]}))
    assert r.json()["problem"]["line"] == 3 and r.json()["problem"]["field"] == "answer"
    assert n_rows(session_factory) == (0, 0, 0)


def test_a_queue_that_is_down_is_503_and_leaves_nothing(
    client: TestClient, queue: FakeQueue, arms: dict[str, int], tmp_path: Path, session_factory: sessionmaker[Session],
    seeded: Seeded,
) -> None:
    queue.down = True
    r = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=body(write_base(tmp_path / "b"), arms))
    assert r.status_code == 503 and "unreachable" in r.json()["detail"]
    assert n_rows(session_factory) == (0, 0, 0) and queue.jobs == []


def test_hub_name_and_the_datasets_default_base_model(
    client: TestClient, arms: dict[str, int], tmp_path: Path, seeded: Seeded
) -> None:
    ds = seeded.dataset_id
    r = client.post(f"/api/datasets/{ds}/experiments", json=body("llava-hf/llava-1.5-7b-hf", arms, seeds=[0]))
    assert r.status_code == 202 and r.json()["base_model"] == "llava-hf/llava-1.5-7b-hf"
    assert client.patch(f"/api/datasets/{ds}", json={"experiment_base_model": str(tmp_path / "nope")}).status_code == 422
    base = write_base(tmp_path / "demo-base")
    r = client.patch(f"/api/datasets/{ds}", json={"experiment_base_model": str(base)})
    assert r.status_code == 200 and r.json()["experiment_base_model"] == str(base.resolve())
    assert client.get(f"/api/datasets/{ds}").json()["experiment_base_model"] == str(base.resolve())
    r = client.post(f"/api/datasets/{ds}/experiments", json=body(base, arms, base_model=None, name="default"))
    assert r.status_code == 202 and r.json()["base_model"] == str(base.resolve())
    assert client.patch(f"/api/datasets/{ds}", json={"experiment_base_model": None}).json()["experiment_base_model"] is None


# --- resume, cancel, token ----------------------------------------------------------------------------------


def test_posting_again_resumes_instead_of_duplicating(
    client: TestClient, queue: FakeQueue, arms: dict[str, int], tmp_path: Path, session_factory: sessionmaker[Session],
    seeded: Seeded,
) -> None:
    req = body(write_base(tmp_path / "base"), arms)
    first = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=req).json()
    rows = n_rows(session_factory)
    sent = list(queue.jobs)
    again = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=req)
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert n_rows(session_factory) == rows and queue.jobs == sent  # fresh queued jobs are not sent twice
    jobs = [j["id"] for j in first["jobs"]]
    with session_factory() as s:  # one failed, one running whose worker died, one running alive, one done
        s.execute(update(ExperimentJob).where(ExperimentJob.id == jobs[0]).values(status="failed", error="boom"))
        s.execute(update(ExperimentJob).where(ExperimentJob.id == jobs[1]).values(
            status="running", heartbeat_at=utcnow() - timedelta(seconds=60)))
        s.execute(update(ExperimentJob).where(ExperimentJob.id == jobs[2]).values(status="running", heartbeat_at=utcnow()))
        s.execute(update(ExperimentJob).where(ExperimentJob.id == jobs[3]).values(status="done"))
        s.commit()
    queue.jobs.clear()
    out = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=req).json()
    assert queue.jobs == [jobs[0], jobs[1]]
    status = {j["id"]: (j["status"], j["error"]) for j in out["jobs"]}
    assert status[jobs[0]] == ("queued", None) and status[jobs[1]][0] == "running" and status[jobs[3]][0] == "done"
    assert out["status"] == "running"


def test_cancel_then_post_again_resumes(
    client: TestClient, queue: FakeQueue, arms: dict[str, int], tmp_path: Path, session_factory: sessionmaker[Session],
    seeded: Seeded,
) -> None:
    req = body(write_base(tmp_path / "base"), arms, seeds=[0])
    exp = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=req).json()
    first = exp["jobs"][0]["id"]
    with session_factory() as s:
        claim = claim_job(s, first, lease_s=5.0, output_dir=str(tmp_path / "out"))
        s.commit()
    assert claim.ok and claim.attempt == 1
    r = client.post(f"/api/experiments/{exp['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert {j["status"] for j in r.json()["jobs"]} == {"cancelled"}
    with session_factory() as s:  # the running worker learns of it at its next heartbeat
        assert not beat(s, first, claim.attempt, {"step": 3})
    assert client.post(f"/api/experiments/{exp['id']}/cancel").status_code == 200  # idempotent
    queue.jobs.clear()
    out = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=req).json()
    assert out["id"] == exp["id"] and out["status"] == "queued" and sorted(queue.jobs) == sorted(j["id"] for j in exp["jobs"])
    with session_factory() as s:
        s.execute(update(ExperimentJob).where(ExperimentJob.experiment_id == exp["id"]).values(status="done"))
        s.execute(update(Experiment).where(Experiment.id == exp["id"]).values(status="done"))
        s.commit()
    r = client.post(f"/api/experiments/{exp['id']}/cancel")
    assert r.status_code == 409 and "already done" in r.json()["detail"]
    assert client.post("/api/experiments/999999/cancel").status_code == 404
    assert client.get("/api/experiments/999999").status_code == 404


def test_mutating_routes_need_the_token(
    xsettings: Settings, engine: Engine, queue: FakeQueue, arms: dict[str, int], tmp_path: Path, seeded: Seeded
) -> None:
    app = create_app(xsettings.model_copy(update={"api_token": "s3cret"}), engine)
    app.state.task_queue = queue
    req = body(write_base(tmp_path / "base"), arms, seeds=[0])
    auth = {"Authorization": "Bearer s3cret"}
    with TestClient(app) as c:
        url = f"/api/datasets/{seeded.dataset_id}/experiments"
        assert c.post(url, json=req).status_code == 401
        assert c.post(url, json=req, headers={"Authorization": "Bearer nope"}).status_code == 403
        exp = c.post(url, json=req, headers=auth)
        assert exp.status_code == 202
        eid = exp.json()["id"]
        assert c.post(f"/api/experiments/{eid}/cancel").status_code == 401
        assert c.patch(f"/api/datasets/{seeded.dataset_id}", json={"experiment_base_model": None}).status_code == 401
        assert c.get(f"/api/experiments/{eid}").status_code == 401  # reads need the token too
        assert c.get(f"/api/experiments/{eid}", headers=auth).status_code == 200
        assert c.get("/api/eval_suites", headers=auth).status_code == 200
        assert c.post(f"/api/experiments/{eid}/cancel", headers=auth).status_code == 200


def test_job_lease_claim_takeover_and_requeue(
    client: TestClient, queue: FakeQueue, arms: dict[str, int], tmp_path: Path, session_factory: sessionmaker[Session],
    seeded: Seeded,
) -> None:
    """The worker side's lease: one claim at a time, a stale heartbeat is taken over (the old worker then stops),
    a finished job is never claimed again; a fresh embedded worker re-enqueues what is active."""
    from backend.experiments import requeue_active_jobs

    req = body(write_base(tmp_path / "base"), arms, arms=[{"selection": arms["selection"]}], seeds=[0], control="none")
    [job] = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=req).json()["jobs"]
    jid = job["id"]
    with session_factory() as s:
        first = claim_job(s, jid, lease_s=5.0, output_dir="/out")
        again = claim_job(s, jid, lease_s=5.0, output_dir="/out")
        assert first.ok and not again.ok and "running elsewhere" in (again.reason or "")
        assert beat(s, jid, first.attempt, {"step": 2, "phase": "training"})
        later = utcnow() + timedelta(seconds=6)
        taken = claim_job(s, jid, lease_s=5.0, output_dir="/out", now=later)
        assert taken.ok and taken.attempt == 2
        assert not beat(s, jid, first.attempt, {"step": 3})  # the old worker learns it lost the job
        assert not finish_job(s, jid, first.attempt, "done")
        queue.jobs.clear()
        assert requeue_active_jobs(s, queue) == [jid] and queue.jobs == [jid]
        assert finish_job(s, jid, taken.attempt, "done", {"model_dir": "/out/model"})
        assert not claim_job(s, jid, lease_s=5.0, output_dir="/out", now=later + timedelta(hours=1)).ok
        assert requeue_active_jobs(s, queue) == []
        s.commit()
    exp = client.get(f"/api/datasets/{seeded.dataset_id}/experiments").json()[0]
    assert exp["status"] == "done" and exp["jobs"][0]["attempts"] == 2 and exp["jobs"][0]["model_dir"] == "/out/model"


def test_deleting_the_dataset_deletes_its_experiments(
    client: TestClient, arms: dict[str, int], tmp_path: Path, session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    exp = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=body(write_base(tmp_path / "b"), arms))
    _finish_with_results(session_factory, exp.json()["jobs"][0]["id"], [1, 0, 1], "")
    assert client.delete(f"/api/datasets/{seeded.dataset_id}").status_code == 204
    assert n_rows(session_factory) == (0, 0, 0)
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(ExperimentResult)) == 0
    assert client.get(f"/api/experiments/{exp.json()['id']}").status_code == 404


# --- results, statistics, manifest, CSV ------------------------------------------------------------------


def _finish_with_results(factory: sessionmaker[Session], job_id: int, accuracy: list[int], arm_kind: str) -> None:
    """What a worker does at the end of a job: claim, record the suite's results (twice: once is kept), done."""
    ids = [f"q{i}" for i in range(len(accuracy))]
    types = [("colour", "shape")[i % 2] for i in range(len(accuracy))]
    rows = [
        {"metric": "accuracy", "value": float(np.mean(accuracy)), "n_items": len(accuracy),
         "outcomes": {"ids": ids, "values": accuracy, "types": types}},
        {"metric": "answer_loss", "value": 1.5, "n_items": 4,
         "outcomes": {"ids": ids, "values": [1.5 if i % 3 == 0 else None for i in range(len(ids))], "types": types}},
    ]
    with factory() as s:
        claim = claim_job(s, job_id, 5.0, f"/tmp/out/{job_id}")
        assert claim.ok
        assert record_suite(s, job_id, "colours", "sha256:x", rows) == 2
        assert record_suite(s, job_id, "colours", "sha256:x", rows) == 0
        assert finish_job(s, job_id, claim.attempt, "done", {"model_dir": f"/tmp/out/{job_id}/model"})
        s.commit()


def test_results_statistics_manifest_and_csv(
    client: TestClient, arms: dict[str, int], tmp_path: Path, session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    req = body(write_base(tmp_path / "base"), arms, arms=[{"selection": arms["selection"]}], seeds=[0, 1, 2])
    exp = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=req).json()
    arm, ctrl = exp["arms"]
    rng = np.random.default_rng(0)
    for job in exp["jobs"]:
        p = 0.9 if job["arm_id"] == arm["id"] else 0.3
        _finish_with_results(session_factory, job["id"], (rng.random(12) < p).astype(int).tolist(), "")
    out = client.get(f"/api/experiments/{exp['id']}").json()
    assert out["status"] == "done" and all(j["model_dir"] for j in out["jobs"])
    res = {(r["arm_id"], r["metric"]): r for r in out["results"]}
    acc = res[(arm["id"], "accuracy")]
    assert set(acc) >= {"arm_id", "suite", "metric", "mean", "ci", "per_seed", "delta"}
    assert len(acc["per_seed"]) == 3 and acc["seeds"] == [0, 1, 2] and acc["ci_method"] == "t_over_seeds"
    assert acc["ci"][0] <= acc["mean"] <= acc["ci"][1] and acc["mean"] == pytest.approx(np.mean(acc["per_seed"]))
    d = acc["delta"]
    assert d["vs_arm_id"] == ctrl["id"] and d["mean"] > 0.3 and d["ci"][0] > 0 and d["ci_includes_zero"] is False
    assert set(acc["by_type"]) == {"colour", "shape"} and acc["by_type"]["colour"]["delta"]["n_items"] == 6
    assert res[(ctrl["id"], "accuracy")]["delta"] is None
    assert res[(arm["id"], "answer_loss")]["delta"]["mean"] == 0.0
    assert client.get(f"/api/experiments/{exp['id']}").json()["results"] == out["results"]  # a fixed bootstrap seed
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(ExperimentResult)) == 12  # 6 jobs x 2 metrics, once each

    m = client.get(f"/api/experiments/{exp['id']}/manifest")
    assert m.status_code == 200 and "attachment" in m.headers["content-disposition"]
    man = m.json()
    assert man["code_version"] and man["base_model"]["local"] and man["base_model"]["config_sha256"].startswith("sha256:")
    assert man["training"]["params_key"] == out["train_params_key"] and man["training"]["params"]["epochs"] == 1
    assert man["evaluation"]["suites"][0]["digest"].startswith("sha256:")
    marm, mctrl = man["arms"]
    assert marm["recipe"]["region"]["type"] == "top" and marm["recipe"]["task_types"] == ["conversation", "referring_qa"]
    assert {s["scorer_key"] for s in man["scorers"].values()} == {"k-clip", "k-loss"}
    assert [j["control_seed"] for j in mctrl["jobs"]] == [0, 1, 2] and mctrl["recipe"]["population"]["task_types"]
    with_ids = client.get(f"/api/experiments/{exp['id']}/manifest", params={"include_ids": True}).json()
    assert len(with_ids["arms"][1]["jobs"][0]["sample_ids"]) == arm["n"]

    c = client.get(f"/api/experiments/{exp['id']}/results.csv")
    assert c.status_code == 200 and c.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(c.text)))
    assert len(rows) == 6 * 2 and {r["metric"] for r in rows} == {"accuracy", "answer_loss"}
    assert {r["arm_kind"] for r in rows} == {"selection", "control"} and all(r["model_dir"] for r in rows)


def test_contrasts_between_arms(
    client: TestClient, arms: dict[str, int], tmp_path: Path, session_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    req = body(write_base(tmp_path / "base"), arms, control="none", seeds=[0, 1])
    exp = client.post(f"/api/datasets/{seeded.dataset_id}/experiments", json=req).json()
    assert [a["kind"] for a in exp["arms"]] == ["selection", "curriculum"] and len(exp["jobs"]) == 4
    first, second = exp["arms"]
    for job in exp["jobs"]:
        acc = [1] * 12 if job["arm_id"] == first["id"] else [1, 0] * 6
        _finish_with_results(session_factory, job["id"], acc, "")
    out = client.get(f"/api/experiments/{exp['id']}").json()
    [acc] = [c for c in out["contrasts"] if c["metric"] == "accuracy"]
    assert (acc["arm_id"], acc["vs_arm_id"]) == (first["id"], second["id"]) and acc["mean"] == pytest.approx(0.5)
    assert all(r["delta"] is None for r in out["results"])


# --- the command line --------------------------------------------------------------------------------------


def test_experiment_commands(tmp_path: Path) -> None:
    """`qspace experiment create | status | results` on a SQLite store and the server-less broker (no worker:
    the jobs stay queued); results are written here as a worker would."""
    import os
    import subprocess
    import sys

    from backend.db import make_engine, make_session_factory
    from backend.migrate import upgrade

    data = tmp_path / "data"
    suite = write_suite(tmp_path / "suites" / "colours.jsonl")
    env = {**os.environ, "QSPACE_DATA_DIR": str(data), "QSPACE_EVAL_SUITES": str(suite)}
    env.pop("QSPACE_DATABASE_URL", None)
    env.pop("QSPACE_BROKER_URL", None)
    data.mkdir()
    engine = make_engine(f"sqlite:///{data / 'qspace.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    seeded = seed_scored(factory, tmp_path, n=60)
    with factory() as s:
        sel = Selection(dataset_id=seeded.dataset_id, name="first", recipe={"region": {"type": "all"}}, count=10,
                        sample_ids=np.arange(1, 11, dtype="<i4").tobytes())
        s.add(sel)
        s.commit()
        sel_id = sel.id

    def qspace(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "qspace", "experiment", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    base = write_base(tmp_path / "base")
    r = qspace("create", "seeded-0", "--selection", str(sel_id), "--suite", "colours", "--seeds", "0,1",
               "--base-model", str(base), "--train", "epochs=1", "--train", "batch_size=4")
    assert r.returncode == 0, r.stderr
    exp_id = int(r.stdout.strip().splitlines()[-1])
    assert "0/4 jobs done" in r.stderr
    r = qspace("create", "seeded-0", "--selection", "999", "--suite", "colours", "--base-model", str(base))
    assert r.returncode == 2 and "selection 999 not found" in r.stderr
    with factory() as s:
        jobs = list(s.scalars(select(ExperimentJob).where(ExperimentJob.experiment_id == exp_id).order_by(ExperimentJob.id)))
    for job in jobs:
        _finish_with_results(factory, job.id, [1, 0, 1, 1] * 3, "")
    r = qspace("status", str(exp_id))
    assert r.returncode == 0 and r.stdout.count(" done ") == 4 and "/tmp/out/" in r.stdout
    r = qspace("results", str(exp_id))
    assert r.returncode == 0 and "accuracy" in r.stdout and "delta +0.0000" in r.stdout, r.stdout
    r = qspace("results", str(exp_id), "--format", "csv")
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 1 + 4 * 2
    assert qspace("status", "4242").returncode == 2
    engine.dispose()
