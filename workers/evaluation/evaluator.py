"""Scoring a LLaVA-style model on an eval suite: multiple choice by log-likelihood, answer loss on references.

Each continuation (an option, or a reference answer) is the answer of a one-turn conversation (the item's image
and question, then the continuation), encoded by the ``mllm_loss`` scorer's encoder: the log-likelihood of a
continuation is the sum over exactly the tokens the scorer would count for that answer. Options are scored
without the end-of-turn token (as lmms-eval scores a continuation), references with it (as the scorer's loss).

The shared part of an item's sequences (image and question, up to where the continuations start) runs once,
as lmms-eval's loglikelihood does, and its key/value cache serves every continuation of the item. A batch of
items takes two model calls: their prefixes together, then all their continuations together.
:meth:`SuiteEvaluator.reference_item` is the slow, obvious computation (one full, unpadded model call per
continuation, transformers' own loss over labels) that tests hold the fast one to.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from backend.eval_specs import EvalItem, EvalSuite
from backend.scorer_specs import ScoreItem
from workers.evaluation.outcomes import ItemOutcome, SuiteResult, summarise
from workers.scorers.base import SampleError, load_image, resolve_device, resolve_dtype
from workers.scorers.lm import Encoded, load_mllm, reference_logprob, split_head
from workers.training.encoding import mllm_encoder

__all__ = ["SuiteEvaluator", "evaluate_suite"]

Prepared = tuple[list[Encoded], list[Encoded], torch.Tensor | None]  # options, references, the image's pixels


def _common_prefix(seqs: list[list[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return n


class SuiteEvaluator:
    """A model ready to score eval items. Give ``model`` (hub name or folder, loaded like the ``mllm_loss``
    scorer loads it) or ``loaded=(model, processor)`` (e.g. a model just trained in this process)."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        loaded: tuple[Any, Any] | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        template: str = "auto",
        max_length: int | None = None,
    ) -> None:
        if (model is None) == (loaded is None):
            raise ValueError("model: give a model name or path, or loaded=(model, processor)")
        if loaded is not None:
            self.model, self.processor = loaded
            self.device = next(self.model.parameters()).device
            self.dtype = next(self.model.parameters()).dtype
            self.name = str(getattr(self.model, "name_or_path", "") or "in-memory")
        else:
            self.device = resolve_device(device)
            self.dtype = resolve_dtype(self.device, dtype)
            self.model, self.processor = load_mllm(str(model), self.device, self.dtype)
            self.name = str(model)
        self.model.eval()
        self.base, self.head = split_head(self.model)
        self.option_encoder = mllm_encoder(
            self.model, self.processor, template=template, include_eos=False, max_length=max_length
        )
        self.reference_encoder = mllm_encoder(
            self.model, self.processor, template=template, include_eos=True, max_length=max_length
        )
        self.image_token_id = self.option_encoder.image_token_id
        self.shared_prefix_runs = 0  # items scored with their prefix run once (the rest: one call per sequence)

    # -- encoding
    def _encode(self, item: EvalItem) -> tuple[list[Encoded], list[Encoded]]:
        """(one sequence per option, one per reference)."""
        images = [item.image] if item.image else []

        def conversation(answer: str) -> ScoreItem:
            turns = [{"from": "human", "value": item.question}, {"from": "gpt", "value": answer}]
            return ScoreItem(0, turns, images)

        options = [self.option_encoder.encode(conversation(o), len(images)) for o in item.options or ()]
        refs = [self.reference_encoder.encode(conversation(r), len(images)) for r in item.references or ()]
        return options, refs

    def _pixels(self, images: list[Any]) -> torch.Tensor:
        """Pixel values of decoded images, one image-processor call for all (a fixed-resolution processor
        treats each image alone, so this equals one call per image)."""
        pixels = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, self.dtype)

    # -- the two computations
    def _prefix_cut(self, seqs: list[Encoded]) -> int:
        """Length of the prefix the item's sequences share and that holds no counted position's predictor and
        every image token; 0 when there is none (the item then takes the per-sequence path)."""
        first_target = min(s.targets[0] for s in seqs)
        cut = min(_common_prefix([s.ids for s in seqs]), first_target - 1)
        if cut < 1 or any(t == self.image_token_id for s in seqs for t in s.ids[cut:]):
            return 0
        return cut

    def _shared_prefix_logprobs(
        self, groups: list[tuple[list[Encoded], torch.Tensor | None]]
    ) -> list[list[tuple[float, int]]]:
        """(sum log p, count) per sequence of each item: two model calls for the whole batch of items.

        1. The items' prefixes, right-padded, with their images: the key/value cache of every prefix.
        2. Every continuation of every item at once, right-padded, each over its item's cache row: attention
           mask = its prefix's real tokens + its own; positions continue from its prefix's length (the cache
           slots of a shorter prefix's padding are masked, and rotary positions only count real tokens).
        """
        cuts = [self._prefix_cut(seqs) for seqs, _ in groups]
        out: list[list[tuple[float, int]]] = [[] for _ in groups]
        for i, (seqs, pixels) in enumerate(groups):
            if not cuts[i]:
                out[i] = self._full_logprobs(seqs, pixels)
        fast = [i for i in range(len(groups)) if cuts[i]]
        if not fast:
            return out
        self.shared_prefix_runs += len(fast)
        dev, pad = self.device, self._pad_id()
        width = max(cuts[i] for i in fast)
        prefix = torch.full((len(fast), width), pad, dtype=torch.long)
        prefix_mask = torch.zeros((len(fast), width), dtype=torch.long)
        for r, i in enumerate(fast):
            prefix[r, : cuts[i]] = torch.tensor(groups[i][0][0].ids[: cuts[i]])
            prefix_mask[r, : cuts[i]] = 1
        pix = [groups[i][1] for i in fast if groups[i][1] is not None]
        pixels = torch.cat(pix) if pix else None  # type: ignore[arg-type]
        cache = self.base(
            input_ids=prefix.to(dev), attention_mask=prefix_mask.to(dev), pixel_values=pixels, use_cache=True
        ).cache

        rows = [(r, i, s) for r, i in enumerate(fast) for s in groups[i][0]]  # (cache row, item, sequence)
        cache.batch_select_indices(torch.tensor([r for r, _, _ in rows], device=dev))
        cont = max(len(s.ids) - cuts[i] for _, i, s in rows)
        ids = torch.full((len(rows), cont), pad, dtype=torch.long)
        mask = torch.cat([prefix_mask[[r for r, _, _ in rows]], torch.zeros((len(rows), cont), dtype=torch.long)], 1)
        positions = torch.empty((len(rows), cont), dtype=torch.long)
        for b, (_, i, s) in enumerate(rows):
            n = len(s.ids) - cuts[i]
            ids[b, :n] = torch.tensor(s.ids[cuts[i] :])
            mask[b, width : width + n] = 1
            positions[b] = torch.arange(cuts[i], cuts[i] + cont)
        hidden = self.base(
            input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev), cache=cache,
            use_cache=True,
        )[0]
        # The token at p is predicted by the hidden state at p - 1, column p - 1 - cut of the continuation run.
        b_idx = torch.tensor([b for b, (_, _, s) in enumerate(rows) for _ in s.targets], device=dev)
        cols = torch.tensor([t - 1 - cuts[i] for _, i, s in rows for t in s.targets], device=dev)
        targets = torch.tensor([s.ids[t] for _, _, s in rows for t in s.targets], device=dev)
        logits = self.head(hidden[b_idx, cols]).float()
        logp = logits.gather(1, targets[:, None])[:, 0] - logits.logsumexp(-1)
        sums = torch.zeros(len(rows), dtype=torch.float64, device=dev).index_add_(0, b_idx, logp.double())
        for (_, i, s), v in zip(rows, sums.tolist(), strict=True):
            out[i].append((float(v), len(s.targets)))
        return out

    def _full_logprobs(self, seqs: list[Encoded], pixels: torch.Tensor | None) -> list[tuple[float, int]]:
        """One full, unpadded model call per sequence (transformers' own shifted loss over the labels)."""
        extra = {"pixel_values": pixels} if pixels is not None else {}
        return [reference_logprob(self.model, s, self.device, **extra) for s in seqs]

    def _pad_id(self) -> int:
        tok = self.processor.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))

    # -- items and suites
    def _prepare(self, items: Sequence[EvalItem]) -> list[Prepared | str]:
        """Per item (option sequences, reference sequences, its image's pixels), or why it cannot be scored."""
        encoded: list[tuple[list[Encoded], list[Encoded], Any] | str] = []
        for item in items:
            try:
                options, refs = self._encode(item)
                encoded.append((options, refs, load_image(item.image) if item.image else None))
            except SampleError as e:
                encoded.append(str(e))
        decoded = [x[2] for x in encoded if not isinstance(x, str) and x[2] is not None]
        pixels = iter(self._pixels(decoded)) if decoded else iter(())
        out: list[Prepared | str] = []
        for x in encoded:
            if isinstance(x, str):
                out.append(x)
            else:
                out.append((x[0], x[1], next(pixels)[None] if x[2] is not None else None))
        return out

    @staticmethod
    def _outcome(item: EvalItem, n_options: int, scored: list[tuple[float, int]]) -> ItemOutcome:
        outcome = ItemOutcome(id=item.id, type=item.type)
        if n_options:
            lps = [lp for lp, _ in scored[:n_options]]
            chosen = max(range(len(lps)), key=lambda i: (lps[i], -i))  # ties: the first option
            outcome.option_logprobs, outcome.chosen = lps, chosen
            outcome.correct = int(chosen == item.answer)
        if len(scored) > n_options:
            ref_scores = scored[n_options:]
            tokens = sum(n for _, n in ref_scores)
            outcome.answer_loss = -sum(lp for lp, _ in ref_scores) / tokens
            outcome.answer_tokens = tokens
        return outcome

    def score_items(self, items: Sequence[EvalItem]) -> list[ItemOutcome]:
        """Outcomes of ``items`` (in order), the fast way: their prefixes in one model call, all their
        continuations in a second."""
        prepared = self._prepare(items)
        ok = [(k, p) for k, p in enumerate(prepared) if not isinstance(p, str)]
        groups = [(options + refs, pixels) for _, (options, refs, pixels) in ok]
        with torch.inference_mode():
            scored = self._shared_prefix_logprobs(groups) if groups else []
        by_item = dict(zip([k for k, _ in ok], scored, strict=True))
        out = []
        for k, (item, p) in enumerate(zip(items, prepared, strict=True)):
            if isinstance(p, str):
                out.append(ItemOutcome(id=item.id, type=item.type, error=p))
            else:
                out.append(self._outcome(item, len(p[0]), by_item[k]))
        return out

    def score_item(self, item: EvalItem) -> ItemOutcome:
        """One item, the fast way."""
        return self.score_items([item])[0]

    def reference_item(self, item: EvalItem) -> ItemOutcome:
        """One item, the slow, obvious way: one full model call per option and reference (tests compare
        :meth:`score_items` with it)."""
        [p] = self._prepare([item])
        if isinstance(p, str):
            return ItemOutcome(id=item.id, type=item.type, error=p)
        options, refs, pixels = p
        with torch.inference_mode():
            scored = self._full_logprobs(options + refs, pixels)
        return self._outcome(item, len(options), scored)

    def evaluate(
        self,
        suite: EvalSuite,
        *,
        batch_items: int = 16,
        on_item: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> SuiteResult | None:
        """Every item of ``suite``, ``batch_items`` at a time; ``on_item(done, total)`` after each batch.
        None when ``should_stop()`` turned true."""
        t0 = time.perf_counter()
        outcomes: list[ItemOutcome] = []
        for k in range(0, len(suite.items), batch_items):
            if should_stop is not None and should_stop():
                return None
            outcomes += self.score_items(suite.items[k : k + batch_items])
            if on_item is not None:
                on_item(len(outcomes), len(suite.items))
        return summarise(suite.name, suite.digest, self.name, outcomes, time.perf_counter() - t0)


def evaluate_suite(
    model: str | os.PathLike[str],
    suite: EvalSuite,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    template: str = "auto",
) -> SuiteResult:
    """Load ``model`` (as the ``mllm_loss`` scorer does) and score it on ``suite``."""
    result = SuiteEvaluator(model, device=device, dtype=dtype, template=template).evaluate(suite)
    assert result is not None  # nothing can stop it
    return result
