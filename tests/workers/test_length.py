"""Length scorer: words and tokens of questions, answers and both."""

from __future__ import annotations

from pathlib import Path

from backend.scorer_specs import ScoreItem
from workers.scorers.registry import build_scorer

ITEM = ScoreItem(
    7,
    [
        {"from": "human", "value": "<image>\nWhat is on the table?"},
        {"from": "gpt", "value": "A red cup and two  plates."},
        {"from": "human", "value": "Anything else?"},
        {"from": "gpt", "value": "No."},
    ],
    ["/nowhere.jpg"],  # length never opens images
)


def test_whitespace_words_without_a_tokenizer() -> None:
    m = build_scorer("length", {}).score_all([ITEM])[7].metrics
    assert m == {
        "tokens": 14.0,
        "question_tokens": 7.0,
        "answer_tokens": 7.0,
        "words": 14.0,
        "question_words": 7.0,
        "answer_words": 7.0,
    }


def test_tokens_with_a_tokenizer(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["lm"])
    scorer = build_scorer("length", {"model": str(tiny_models["lm"])})
    m = scorer.score_all([ITEM])[7].metrics
    assert m is not None

    def count(t: str) -> int:
        return len(tok(t, add_special_tokens=False)["input_ids"])

    q = count("What is on the table?") + count("Anything else?")  # <image> removed
    a = count("A red cup and two  plates.") + count("No.")
    assert (m["question_tokens"], m["answer_tokens"], m["tokens"]) == (q, a, q + a)
    assert m["words"] == 14 and m["tokens"] > m["words"]


def test_every_sample_gets_a_row(samples: list[ScoreItem]) -> None:
    scorer = build_scorer("length", {})
    got = scorer.score_all([*samples, ScoreItem(1, [], [])])
    assert len(got) == len(samples) + 1
    assert got[1].error == "empty conversation"
    assert all(r.error is None for k, r in got.items() if k != 1)
    assert scorer.samples == len(samples) + 1 and scorer.errors == 1
