"""Evaluation: the batched shared-prefix computation equals a slow per-item reference, option log-likelihoods
are the mllm_loss scorer's losses, per-item outcomes and metrics agree, a trained job's model evaluates."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from backend.eval_specs import ACCURACY, ANSWER_LOSS, EvalSuite, load_eval_suite
from backend.scorer_specs import ScoreItem
from tests.workers.conftest import REL
from workers.evaluation import SuiteEvaluator, evaluate_suite
from workers.scorers.registry import build_scorer
from workers.tiny_models import _WORDS
from workers.training import train

OPTIONS = ["red", "red square", "blue", "green", "yellow", "two circles", "a small red square", "three", "left", "no"]
TYPES = ["colour", "shape", "count"]


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))).capitalize()


@pytest.fixture(scope="module")
def suite(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> EvalSuite:
    """24 items: multiple choice (2-5 options, some sharing their first tokens), references, both, text-only,
    images by relative and absolute path, and one unreadable image."""
    rng = random.Random(5)
    folder = tmp_path_factory.mktemp("suite")
    (folder / "pics").symlink_to(image_dir)
    images = sorted(p.name for p in image_dir.glob("img*"))
    lines = []
    for i in range(24):
        item: dict = {"id": f"q{i}", "question": _sentence(rng, 3, 12) + "?", "type": TYPES[i % 3]}
        if i % 6 != 5:
            name = rng.choice(images)
            item["image"] = f"pics/{name}" if i % 2 else str(image_dir / name)
        if i % 4 != 3:
            item["options"] = rng.sample(OPTIONS, rng.randint(2, 5))
            item["answer"] = rng.randrange(len(item["options"]))
        if i % 4 >= 2:
            item["references"] = [_sentence(rng, 1, 20) + "." for _ in range(rng.randint(1, 3))]
        lines.append(item)
    lines.append({"id": "bad-image", "image": "pics/notanimage.jpg", "question": "What?", "options": ["a", "b"],
                  "answer": 0})
    path = folder / "suite.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return load_eval_suite(path)


@pytest.fixture(scope="module")
def evaluator(tiny_models: dict[str, Path]) -> SuiteEvaluator:
    return SuiteEvaluator(tiny_models["llava"], device="cpu")


@pytest.mark.parametrize("batch_items", [1, 5, 64])
def test_batched_equals_per_item_reference(evaluator: SuiteEvaluator, suite: EvalSuite, batch_items: int) -> None:
    """Items batched together (prefixes of different lengths, with and without an image) score as each item
    alone, computed the slow way."""
    runs_before = evaluator.shared_prefix_runs
    result = evaluator.evaluate(suite, batch_items=batch_items)
    assert result is not None
    n_scored = 0
    for item, fast in zip(suite.items, result.items, strict=True):
        slow = evaluator.reference_item(item)
        assert fast.id == slow.id == item.id and fast.error == slow.error
        if fast.error:
            assert item.id == "bad-image" and fast.error.startswith("image unreadable")
            continue
        n_scored += 1
        assert (fast.option_logprobs is None) == (item.options is None)
        for a, b in zip(fast.option_logprobs or [], slow.option_logprobs or [], strict=True):
            assert a == pytest.approx(b, rel=REL)
        assert fast.chosen == slow.chosen and fast.correct == slow.correct
        if item.references:
            assert fast.answer_loss == pytest.approx(slow.answer_loss, rel=REL)
            assert fast.answer_tokens == slow.answer_tokens
    assert evaluator.shared_prefix_runs - runs_before == n_scored == len(suite.items) - 1  # never the fallback


def test_option_loglikelihood_is_the_scorers_loss(
    evaluator: SuiteEvaluator, suite: EvalSuite, tiny_models: dict[str, Path]
) -> None:
    """An option's log-likelihood = -loss_sum of the mllm_loss scorer on (question, option) without the end
    token; answer_loss = the scorer's loss per token over the references, with it."""
    items = [it for it in suite.items if it.options and it.references and it.image][:3]
    assert items
    no_eos = build_scorer("mllm_loss", {"model": str(tiny_models["llava"]), "num_workers": 0, "include_eos": False},
                          device="cpu")
    with_eos = build_scorer("mllm_loss", {"model": str(tiny_models["llava"]), "num_workers": 0}, device="cpu")

    def conv(q: str, a: str, image: str | None) -> ScoreItem:
        return ScoreItem(0, [{"from": "human", "value": q}, {"from": "gpt", "value": a}], [image] if image else [])

    for item in items:
        got = evaluator.score_item(item)
        for option, lp in zip(item.options or (), got.option_logprobs or [], strict=True):
            metrics = no_eos.reference(conv(item.question, option, item.image)).metrics  # type: ignore[attr-defined]
            assert -lp == pytest.approx(metrics["loss_sum"], rel=REL)
        refs = [with_eos.reference(conv(item.question, r, item.image)).metrics for r in item.references or ()]  # type: ignore[attr-defined]
        loss = sum(m["loss_sum"] for m in refs) / sum(m["tokens"] for m in refs)
        assert got.answer_loss == pytest.approx(loss, rel=REL)


def test_outcomes_and_metrics(evaluator: SuiteEvaluator, suite: EvalSuite) -> None:
    seen: list[tuple[int, int]] = []
    result = evaluator.evaluate(suite, on_item=lambda done, total: seen.append((done, total)))
    assert result is not None
    assert seen[-1] == (len(suite.items), len(suite.items))
    assert [o.id for o in result.items] == [it.id for it in suite.items]  # one outcome per item, in order
    assert result.errors == 1 and result.digest == suite.digest
    mc = [o for o in result.items if o.correct is not None]
    assert result.n_items[ACCURACY] == len(mc) == suite.n_items(ACCURACY) - 1
    assert result.metrics[ACCURACY] == pytest.approx(sum(o.correct or 0 for o in mc) / len(mc))
    for o in mc:
        lps = o.option_logprobs or []
        assert o.chosen == lps.index(max(lps))
    losses = [o.answer_loss for o in result.items if o.answer_loss is not None]
    assert result.n_items[ANSWER_LOSS] == len(losses) == suite.n_items(ANSWER_LOSS)
    assert result.metrics[ANSWER_LOSS] == pytest.approx(sum(losses) / len(losses))
    assert set(result.by_type) == set(TYPES)
    assert sum(v["n_accuracy"] for v in result.by_type.values()) == len(mc)
    assert evaluator.evaluate(suite, should_stop=lambda: True) is None


def test_a_trained_jobs_model_evaluates(
    tiny_models: dict[str, Path], samples: list[ScoreItem], suite: EvalSuite, tmp_path: Path
) -> None:
    params = {"preset": "paper_lora", "lora_r": 4, "lora_alpha": 8, "grad_accum": 1, "batch_size": 8, "lr": 1e-2,
              "max_steps": 2}
    job = train(tiny_models["llava"], [samples[:16]], tmp_path, params=params, seed=0)
    assert job.model_dir is not None
    result = evaluate_suite(job.model_dir, suite, device="cpu")
    assert result.model == job.model_dir
    assert result.n_items[ACCURACY] == suite.n_items(ACCURACY) - 1
    assert result.metrics[ANSWER_LOSS] > 0
