"""lmms-eval tasks as eval suites on the API side (no lmms-eval import): ``lmms:<task>`` names from QSPACE_LMMS_TASKS
and from the task YAMLs under QSPACE_LMMS_INCLUDE are listed, checked and digested, and an experiment can name
them. Running them is tests/workers/test_lmms_adapter.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend.api.app import create_app
from backend.eval_suites import UnknownSuite, find_suite, list_suites
from backend.lmms_specs import LmmsSuite, lmms_task_digest, local_task_index
from backend.settings import Settings
from tests.seeding import seed_scored
from tests.test_experiments_api import FakeQueue, write_base

TEMPLATE = """dataset_path: json
dataset_kwargs:
  data_files:
    test: data/docs.jsonl
test_split: test
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
"""
TASK = """include: _template_yaml
task: local_mc
output_type: multiple_choice
doc_to_choice: options
doc_to_target: answer
metric_list:
  - metric: acc
"""


def write_tasks(root: Path, n_docs: int = 5) -> Path:
    """A task folder as lmms-eval's own: a template without the .yaml suffix, a task including it, the helpers
    beside it, a data file by relative path; plus a group, a template-only YAML and a file that is not YAML."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "docs.jsonl").write_text(
        "".join(json.dumps({"q": f"q{i}", "options": ["a", "b"], "answer": 0}) + "\n" for i in range(n_docs)) + "\n"
    )
    (root / "_template_yaml").write_text(TEMPLATE)
    (root / "local_mc.yaml").write_text(TASK)
    (root / "utils.py").write_text("def doc_to_visual(doc):\n    return []\n\ndef doc_to_text(doc):\n    return doc['q']\n")
    (root / "group.yaml").write_text("group: local_group\ntask:\n  - local_mc\n")
    (root / "nested").mkdir()
    (root / "nested" / "other.yaml").write_text("task: other_task\ndataset_path: lmms-lab/other\ntest_split: test\n")
    (root / "broken.yaml").write_text("task: [unclosed\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "stale.yaml").write_text("task: stale\n")
    return root


def test_local_index_reads_yaml_like_lmms_eval(tmp_path: Path) -> None:
    root = write_tasks(tmp_path / "tasks")
    assert local_task_index([root]) == {
        "local_mc": (root / "local_mc.yaml").resolve(), "other_task": (root / "nested" / "other.yaml").resolve()
    }


def test_listed_and_found(settings: Settings, tmp_path: Path) -> None:
    root = write_tasks(tmp_path / "tasks")
    s = settings.model_copy(update={"lmms_tasks": ["pope", "local_mc"], "lmms_include": [root]})
    listed = {x["name"]: x for x in list_suites(s)}
    assert list(listed) == ["lmms:pope", "lmms:local_mc", "lmms:other_task"]  # configured names first
    assert listed["lmms:pope"] == {
        "name": "lmms:pope", "path": "lmms-eval:pope", "n_items": 0, "metrics": ["accuracy"], "types": [],
        "digest": lmms_task_digest("pope", None), "error": None,
    }
    local = listed["lmms:local_mc"]
    assert local["path"] == str((root / "local_mc.yaml").resolve()) and local["n_items"] == 5
    assert local["metrics"] == ["accuracy"] and local["error"] is None

    suite = find_suite(s, "lmms:local_mc")
    assert isinstance(suite, LmmsSuite) and suite.task == "local_mc" and suite.output_type == "multiple_choice"
    assert suite.metrics == ["accuracy"] and suite.n_items("accuracy") == 5 and suite.digest == local["digest"]
    builtin = find_suite(s, "lmms:pope")
    assert isinstance(builtin, LmmsSuite) and builtin.yaml_path is None and builtin.path == "lmms-eval:pope"
    for bad in ("lmms:nope", "lmms:stale"):
        with pytest.raises(UnknownSuite, match="lmms:pope, lmms:local_mc, lmms:other_task"):
            find_suite(s, bad)
    with pytest.raises(UnknownSuite, match=r"names no lmms-eval task \(expected lmms:<task>\)"):
        find_suite(s, "lmms:")
    with pytest.raises(UnknownSuite, match=r"none \(set QSPACE_LMMS_TASKS or QSPACE_LMMS_INCLUDE\)"):
        find_suite(settings, "lmms:pope")


@pytest.mark.parametrize("change", ["data/docs.jsonl", "utils.py", "_template_yaml", "local_mc.yaml"])
def test_digest_covers_what_defines_the_task(tmp_path: Path, change: str) -> None:
    root = write_tasks(tmp_path / "tasks")
    yaml_path = root / "local_mc.yaml"
    before = lmms_task_digest("local_mc", yaml_path)
    assert lmms_task_digest("local_mc", yaml_path) == before
    (root / "nested" / "other.yaml").write_text("task: renamed\n")  # another task's file: no change
    assert lmms_task_digest("local_mc", yaml_path) == before
    with (root / change).open("a") as f:
        f.write("\n# edited\n" if change != "data/docs.jsonl" else json.dumps({"q": "new"}) + "\n")
    assert lmms_task_digest("local_mc", yaml_path) != before
    assert lmms_task_digest("pope", None) != lmms_task_digest("gqa", None)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QSPACE_LMMS_TASKS", "pope,gqa")
    monkeypatch.setenv("QSPACE_LMMS_INCLUDE", str(tmp_path))
    s = Settings()
    assert s.lmms_tasks == ["pope", "gqa"] and s.lmms_include == [tmp_path]


@pytest.fixture
def client(settings: Settings, engine: Engine, tmp_path: Path) -> Iterator[TestClient]:
    root = write_tasks(tmp_path / "tasks")
    s = settings.model_copy(update={"lmms_tasks": ["pope"], "lmms_include": [root]})
    app = create_app(s, engine)
    app.state.task_queue = FakeQueue()
    with TestClient(app) as c:
        yield c


def test_experiment_names_lmms_suites(
    client: TestClient, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    listed = {s["name"]: s for s in client.get("/api/eval_suites").json()}
    assert {"lmms:pope", "lmms:local_mc", "lmms:other_task"} <= set(listed)
    seeded = seed_scored(session_factory, tmp_path, n=60)
    ds = seeded.dataset_id
    r = client.post(f"/api/datasets/{ds}/selections", json={"name": "top", "region": {"type": "top", "percent": 30}})
    assert r.status_code == 201, r.text
    req: dict[str, Any] = {
        "name": "exp", "base_model": str(write_base(tmp_path / "base")), "arms": [{"selection": r.json()["id"]}],
        "seeds": [0], "train": {"preset": "quick", "epochs": 1, "batch_size": 4},
        "eval": {"suites": ["lmms:local_mc", "lmms:pope"]},
    }
    bad = client.post(f"/api/datasets/{ds}/experiments", json={**req, "eval": {"suites": ["lmms:nope"]}})
    assert bad.status_code == 422 and "unknown lmms-eval task 'lmms:nope'" in bad.text
    made = client.post(f"/api/datasets/{ds}/experiments", json=req)
    assert made.status_code == 202, made.text
    got = client.get(f"/api/experiments/{made.json()['id']}").json()
    suites = {s["name"]: s for s in got["eval_suites"]}
    assert suites["lmms:local_mc"]["path"] == listed["lmms:local_mc"]["path"]
    assert suites["lmms:local_mc"]["digest"] == listed["lmms:local_mc"]["digest"]
    assert suites["lmms:pope"]["metrics"] == ["accuracy"] and suites["lmms:pope"]["path"] == "lmms-eval:pope"
