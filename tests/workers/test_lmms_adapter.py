"""The lmms-eval adapter, offline: local lmms-eval tasks (YAML + JSONL, images written here) run through lmms-eval's
own evaluator on the tiny LLaVA. Option log-likelihoods equal the suite evaluator's, per-item outcomes come back
(errors included), generation starts from the standard prompt, the registered name works, a changed task is
refused, a stop request stops, and an experiment job evaluates an ``lmms:<task>`` suite and stores its outcomes."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from backend.api.app import create_app
from backend.db import make_engine, make_session_factory
from backend.eval_specs import load_eval_suite
from backend.lmms_specs import lmms_task_digest
from backend.migrate import upgrade
from backend.models import ExperimentResult
from backend.settings import Settings
from tests.queue_helpers import ingest_dataset, write_dataset
from tests.test_experiments_api import FakeQueue
from tests.workers.conftest import REL
from workers.evaluation import SuiteEvaluator

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "yellow": (230, 230, 20)}
OPTIONS = [["red", "green", "blue"], ["blue", "a small yellow square"], ["green", "red", "yellow", "blue"],
           ["yellow", "blue"], ["red", "green"], ["green", "blue", "red"]]

COMMON = """dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
doc_to_visual: image
doc_to_text: question
"""
MC = """include: _common_yaml
task: qspace_mc
output_type: multiple_choice
doc_to_choice: options
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
LL = """include: _common_yaml
task: qspace_ll
output_type: loglikelihood
doc_to_target: answer_text
process_results: !function utils.ll_process_results
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
"""
# lmms-eval's default processing of a loglikelihood result unpacks the list of responses as one (ll, greedy) pair
# and fails; its own loglikelihood tasks bring their process_results, as this one does.
UTILS = """def ll_process_results(doc, results):
    ll, greedy = results[0]
    return {"acc": float(greedy), "perplexity": ll}
"""
GEN = """task: qspace_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: gen.jsonl
test_split: test
output_type: generate_until
doc_to_visual: image
doc_to_text: question
doc_to_target: answer_text
generation_kwargs:
  max_new_tokens: 3
  do_sample: false
  until: ["\\n\\n"]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No hub, and lmms-eval's datasets cache in a temporary folder."""
    cache = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            mp.setenv(key, "1")
        mp.setenv("HF_HOME", str(cache))
        mp.setenv("LMMS_EVAL_DATASETS_CACHE", str(cache / "datasets"))
        from lmms_eval.api.task import _resolve_hf_datasets_cache_dir

        _resolve_hf_datasets_cache_dir.cache_clear()  # it caches the folder of the first call
        yield
        _resolve_hf_datasets_cache_dir.cache_clear()


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory, image_dir: Path) -> Path:
    """Six docs (one text-only, one whose image is not an image), as an lmms-eval task folder and as our suite."""
    d = tmp_path_factory.mktemp("lmms-tasks")
    docs: list[dict[str, Any]] = []
    for i, options in enumerate(OPTIONS):
        answer = i % len(options)
        image: str | None = str(d / f"doc{i}.png")
        colour = next(c for c in COLOURS if c in options[answer])
        Image.new("RGB", (24 + 4 * i, 30), COLOURS[colour]).save(image)
        if i == 3:
            image = None
        if i == 4:
            image = str(image_dir / "notanimage.jpg")
        docs.append({"question": f"What colour is shape {i}?", "image": image, "options": options, "answer": answer,
                     "answer_text": options[answer]})
    (d / "data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
    suite = [{"id": str(i), **{k: v for k, v in x.items() if k != "answer_text"}} for i, x in enumerate(docs)]
    (d / "suite.jsonl").write_text("".join(json.dumps({k: v for k, v in x.items() if v is not None}) + "\n"
                                           for x in suite))
    (d / "_common_yaml").write_text(COMMON.format(data="data.jsonl"))  # relative: lmms-eval reads it from here
    (d / "mc.yaml").write_text(MC)
    (d / "ll.yaml").write_text(LL)
    (d / "utils.py").write_text(UTILS)
    (d / "gen.yaml").write_text(GEN)
    return d


@pytest.fixture(scope="module")
def evaluator(tiny_models: dict[str, Path]) -> SuiteEvaluator:
    return SuiteEvaluator(tiny_models["llava"], device="cpu")


def test_multiple_choice_equals_the_suite_evaluator(offline: None, evaluator: SuiteEvaluator, task_dir: Path) -> None:
    from workers.evaluation.lmms import run_lmms_task

    result = run_lmms_task(evaluator, task_dir / "mc.yaml")
    assert result is not None
    want = evaluator.evaluate(load_eval_suite(task_dir / "suite.jsonl"))
    assert want is not None
    assert [o.id for o in result.items] == [o.id for o in want.items] == [str(i) for i in range(len(OPTIONS))]
    for got, ref in zip(result.items, want.items, strict=True):
        assert got.error == ref.error, got.id
        if got.id == "4":
            assert got.error is not None and got.error.startswith("image unreadable") and got.correct is None
            continue
        assert got.option_logprobs is not None and ref.option_logprobs is not None
        assert got.option_logprobs == pytest.approx(ref.option_logprobs, abs=1e-4, rel=REL)
        assert (got.chosen, got.correct) == (ref.chosen, ref.correct)
    assert result.metrics == pytest.approx(want.metrics) and result.n_items == {"accuracy": 5}
    # lmms-eval's own accuracy (argmin over the negative log-likelihoods) counts the same picks, plus the unreadable
    # doc: all its options score alike, so it picks option 0, which is that doc's answer.
    assert result.lmms_metrics["qspace_mc"]["acc,none"] == pytest.approx((want.metrics["accuracy"] * 5 + 1) / 6)
    assert result.suite == "lmms:qspace_mc" and result.metric == {"qspace_mc": "acc"}
    assert result.digest == lmms_task_digest("qspace_mc", task_dir / "mc.yaml") and result.lmms_eval_version


def test_loglikelihood_task_by_name(offline: None, evaluator: SuiteEvaluator, task_dir: Path) -> None:
    """A task named from an include folder; one continuation per doc gets its log-likelihood (perplexity reads it
    as one), and the per-item score is lmms-eval's greedy flag."""
    from workers.evaluation.lmms import run_lmms_task

    result = run_lmms_task(evaluator, "qspace_ll", include_path=task_dir, limit=4)
    assert result is not None and [o.id for o in result.items] == ["0", "1", "2", "3"]
    suite = evaluator.evaluate(load_eval_suite(task_dir / "suite.jsonl"))
    assert suite is not None
    want = {o.id: o for o in suite.items}
    lls = []
    for got in result.items:
        ref, i = want[got.id], int(got.id)
        assert ref.option_logprobs is not None
        answer = ref.option_logprobs[i % len(OPTIONS[i])]  # the answer's text is the loglikelihood continuation
        assert got.option_logprobs == pytest.approx([answer], abs=1e-4, rel=REL)
        assert got.correct in (0.0, 1.0) and got.chosen is None
        lls.append(got.option_logprobs[0])  # type: ignore[index]
    metrics = result.lmms_metrics["qspace_ll"]
    assert metrics["perplexity,none"] == pytest.approx(math.exp(-sum(lls) / len(lls)), rel=1e-6)
    assert metrics["acc,none"] == pytest.approx(result.metrics["accuracy"])


def test_generate_until_from_the_standard_prompt(offline: None, evaluator: SuiteEvaluator, task_dir: Path) -> None:
    """Greedy generation starts from llava-hf's generation prompt (plus whitespace the tokenizer keeps apart from
    the answer, as the scorer's encoder renders it); a response equal to its target scores 1 in exact_match."""
    from workers.evaluation.lmms import QspaceLlava, run_lmms_task

    adapter = QspaceLlava(evaluator=evaluator)
    proc, tok = evaluator.processor, evaluator.processor.tokenizer
    docs = [json.loads(line) for line in (task_dir / "data.jsonl").read_text().splitlines()][:3]
    expected = []
    for doc in docs:
        image = Image.open(doc["image"]).convert("RGB")
        ours = adapter._prompt_ids(doc["question"], 1)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": doc["question"]}]}]
        standard = proc(images=[image], text=[proc.apply_chat_template(messages, add_generation_prompt=True)],
                        return_tensors="pt")["input_ids"][0].tolist()
        assert ours[: len(standard)] == standard and not tok.decode(ours[len(standard) :]).strip()
        ids = torch.tensor([ours])
        pixels = proc.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        out = evaluator.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                                       max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
        expected.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n\n")[0])
    rigged = [{**doc, "answer_text": expected[0].strip() if k == 0 else "no such answer"} for k, doc in enumerate(docs)]
    (task_dir / "gen.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rigged))

    result = run_lmms_task(evaluator, task_dir / "gen.yaml")
    assert result is not None
    assert result.responses == {str(k): text for k, text in enumerate(expected)}
    assert [o.correct for o in result.items] == [1.0, 0.0, 0.0] and result.metric == {"qspace_gen": "exact_match"}
    assert all(o.option_logprobs is None and o.error is None for o in result.items)


def test_registered_name_through_simple_evaluate(offline: None, tiny_models: dict[str, Path], task_dir: Path) -> None:
    """``qspace_llava`` is an lmms-eval model name: lmms-eval builds it from its model args and evaluates."""
    from lmms_eval import evaluator as lmms_evaluator
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    from workers.evaluation.lmms import QspaceLlava, _skip_filelock_patch

    assert get_model("qspace_llava") is QspaceLlava
    _skip_filelock_patch(lmms_evaluator)
    results = lmms_evaluator.simple_evaluate(
        model="qspace_llava", model_args=f"pretrained={tiny_models['llava']},device=cpu,max_new_tokens=2",
        tasks=["qspace_mc"], limit=2, task_manager=TaskManager("WARNING", include_path=str(task_dir),
                                                                 include_defaults=False),
        bootstrap_iters=0, verbosity="WARNING", process_docs_parallel=1,
    )
    assert [s["doc_id"] for s in results["samples"]["qspace_mc"]] == [0, 1]
    assert results["results"]["qspace_mc"]["acc,none"] in (0.0, 0.5, 1.0)


def test_changed_task_refused_and_stop(offline: None, evaluator: SuiteEvaluator, task_dir: Path) -> None:
    from workers.evaluation.lmms import run_lmms_ref

    ref = {"name": "lmms:qspace_mc", "path": str(task_dir / "mc.yaml"),
           "digest": lmms_task_digest("qspace_mc", task_dir / "mc.yaml")}
    assert run_lmms_ref(evaluator, ref, should_stop=lambda: True) is None  # stopped before its first doc
    with pytest.raises(ValueError, match="changed since the experiment was created"):
        run_lmms_ref(evaluator, {**ref, "digest": "sha256:" + "0" * 64})


def test_experiment_job_evaluates_an_lmms_suite(
    offline: None, tiny_models: dict[str, Path], task_dir: Path, tmp_path: Path
) -> None:
    """An experiment naming ``lmms:qspace_mc`` trains its job, then the worker runs the task through the adapter and
    stores one outcome per doc (None for the unreadable one) for the paired bootstrap."""
    from workers.experiment_tasks import run_job

    settings = Settings(data_dir=tmp_path / "data", image_roots=[tmp_path], data_roots=[tmp_path],
                        lmms_include=[task_dir], job_lease_s=30.0)
    settings.ensure_dirs()
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    ds = ingest_dataset(factory, write_dataset(tmp_path / "ds", 8), "colours")
    app = create_app(settings, engine)
    app.state.task_queue = FakeQueue()
    with TestClient(app) as api:
        sel = api.post(f"/api/datasets/{ds}/selections", json={"name": "all", "region": {"type": "all"}}).json()["id"]
        req = {"name": "lmms", "base_model": str(tiny_models["llava"]), "arms": [{"selection": sel}], "seeds": [0],
               "control": "none", "train": {"preset": "quick", "epochs": 1, "batch_size": 4},
               "eval": {"suites": ["lmms:qspace_mc"]}}
        made = api.post(f"/api/datasets/{ds}/experiments", json=req)
        assert made.status_code == 202, made.text
        [job] = made.json()["jobs"]
        report = run_job(factory, settings, job["id"], device="cpu")
        assert report.status == "done" and report.results == 1, report
        exp = api.get(f"/api/experiments/{made.json()['id']}").json()
    assert exp["status"] == "done" and [(r["metric"], r["n_items"]) for r in exp["results"]] == [("accuracy", 5)]
    with factory() as session:
        [row] = session.scalars(select(ExperimentResult).where(ExperimentResult.job_id == job["id"]))
    assert (row.suite, row.metric, row.n_items) == ("lmms:qspace_mc", "accuracy", 5)
    assert row.outcomes["ids"] == [str(i) for i in range(len(OPTIONS))]
    values = row.outcomes["values"]
    assert values[4] is None and all(v in (0.0, 1.0) for k, v in enumerate(values) if k != 4)
    assert row.value == pytest.approx(sum(v for v in values if v is not None) / 5)
    engine.dispose()
