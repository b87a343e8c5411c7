"""Token and word counts of questions (human turns) and answers (gpt turns); free, and the paper found
length drives loss. Tokens come from the given tokenizer, or are whitespace words without one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from backend.scorer_specs import LengthParams, ScoreItem, ScoreResult, model_identity
from workers.scorers.base import Scorer, cached_model, turns


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


class LengthScorer(Scorer):
    kind = "length"
    params: LengthParams
    window_factor = 16

    def _load(self) -> None:
        name = self.params.model
        self.tokenizer = None
        if name is not None:
            self.tokenizer = cached_model(("tokenizer", model_identity(name)), lambda: load_tokenizer(name))
        self.batch_size = 256

    def _count_tokens(self, texts: list[str]) -> list[int]:
        if self.tokenizer is None:
            return [len(t.split()) for t in texts]
        if not texts:
            return []
        enc = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) for x in enc]

    def _score_window(self, items: list[ScoreItem]) -> Iterator[ScoreResult]:
        texts: list[str] = []
        owners: list[tuple[int, bool]] = []  # (item index, is answer)
        for k, item in enumerate(items):
            for role, text in turns(item.conversations):
                texts.append(text)
                owners.append((k, role == "gpt"))
        counts = self._count_tokens(texts)  # one batched tokenizer call per window
        sums = [[0, 0, 0, 0, 0] for _ in items]  # q tokens, a tokens, q words, a words, turns
        for (k, is_answer), text, n in zip(owners, texts, counts, strict=True):
            sums[k][int(is_answer)] += n
            sums[k][2 + int(is_answer)] += len(text.split())
            sums[k][4] += 1
        for item, (qt, at, qw, aw, n_turns) in zip(items, sums, strict=True):
            if n_turns == 0:
                yield self.failed(item.sample_id, "empty conversation")
                continue
            metrics = {
                "tokens": float(qt + at),
                "question_tokens": float(qt),
                "answer_tokens": float(at),
                "words": float(qw + aw),
                "question_words": float(qw),
                "answer_words": float(aw),
            }
            yield ScoreResult(item.sample_id, metrics, None)
