"""Answer-token loss: ``mllm_loss`` (LLaVA-style, with the images), ``lm_loss`` (text LM) and ``ifd``.

All three share one computation: render the conversation (the model's chat template, or LLaVA-1.5's
``USER: <image>\\n{q} ASSISTANT: {a}</s>USER: ...``), tokenize it with character offsets, count the
tokens that overlap an answer (plus the end-of-turn token right after it, as LLaVA's training loss
does), then run the base model once per length-bucketed batch and apply the output head only at the
counted positions, a chunk at a time: a full-vocabulary float32 logits tensor is never built for the
batch. ``loss_sum`` = -sum log p(answer tokens) is the paper's formula.

Rendering and counting live in :mod:`workers.scorers.conversation`, the ``mllm_loss`` scorer (images) in
:mod:`workers.scorers.mllm`; this module holds loading, the batched computation and the text-only scorers.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from backend.scorer_specs import IfdParams, LmLossParams, MllmLossParams, ScoreItem, ScoreResult
from workers.scorers.base import (
    Failed,
    SampleError,
    Scorer,
    cached_model,
    each,
    model_key,
)
from workers.scorers.conversation import ConversationEncoder, Encoded

_CAUSAL_MULTIMODAL = frozenset({"llava", "vipllava"})
_LOGIT_CHUNK_ELEMENTS = 1 << 25  # logits rows per head call * vocab: 128 MB of float32 at most


# --- loading ---------------------------------------------------------------------------------------


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would flood worker logs


def load_mllm(name: str, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """(model, processor) for an image-text-to-text model, as ``llava-hf/llava-1.5-7b-hf`` loads."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    _quiet_transformers()
    processor = AutoProcessor.from_pretrained(name)
    model = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype)
    model = model.to(device).eval()  # type: ignore[arg-type]
    return model, processor


def load_lm(name: str, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """(model, tokenizer) for a causal LM, as ``gpt2`` loads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    model = model.to(device).eval()  # type: ignore[arg-type]
    return model, tokenizer


def split_head(model: Any) -> tuple[Any, Any]:
    """(base model returning hidden states, output head) of a transformers LM."""
    cfg = getattr(model.config, "text_config", None) or model.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        raise ValueError("model: logits post-processed after the head (soft-capping/scaling): unsupported")
    base = getattr(model, model.base_model_prefix)
    return base, model.get_output_embeddings()


def model_max_length(model: Any, tokenizer: Any) -> int:
    """The longest sequence the model takes (position table and tokenizer limit)."""
    cfg = getattr(model.config, "text_config", None) or model.config
    limits = [getattr(cfg, a, None) for a in ("max_position_embeddings", "n_positions")]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 1_000_000:
        limits.append(tok_max)
    found = [int(x) for x in limits if isinstance(x, int) and x > 0]
    return min(found) if found else 4096


# --- the batched computation -----------------------------------------------------------------------


def answer_logprobs(
    base: Any,
    head: Any,
    seqs: Sequence[Encoded],
    *,
    pad_id: int,
    device: torch.device,
    pixel_values: torch.Tensor | None = None,
    padding_mask: bool = True,
    cache: Any = None,
    offset: int = 0,
) -> list[tuple[float, int]]:
    """(sum of log p(token), count) over each sequence's targets: one right-padded forward, the head
    applied at the target positions only, in chunks.

    ``padding_mask=False`` is exact for purely causal models: with right padding a real token never
    attends to a later (padded) position, so the causal mask alone suffices, and attention takes its
    fast unmasked kernels (flash on CUDA).

    ``cache`` (with ``offset``): the model's key/value cache of the first ``offset`` tokens, which every
    sequence shares the length of (each its own tokens); only ``ids[offset:]`` go through the model then,
    and every target lies past ``offset``.
    """
    n, width = len(seqs), max(len(s.ids) for s in seqs) - offset
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s.ids) - offset] = torch.tensor(s.ids[offset:])
        mask[b, : len(s.ids) - offset] = 1
    rows = torch.cat([torch.full((len(s.targets),), b, dtype=torch.long) for b, s in enumerate(seqs)])
    cols = torch.cat([torch.tensor(s.targets, dtype=torch.long) for s in seqs]) - offset
    targets = ids[rows, cols].to(device, non_blocking=True)
    kwargs: dict[str, Any] = {"input_ids": ids.to(device, non_blocking=True), "use_cache": cache is not None}
    if padding_mask:
        kwargs["attention_mask"] = mask.to(device, non_blocking=True)
    if pixel_values is not None:
        kwargs["pixel_values"] = pixel_values
    if cache is not None:
        kwargs[cache_argument(base)] = cache
    hidden = base(**kwargs)[0]  # [n, width, hidden]
    # Token at p is predicted by the hidden state at p - 1.
    h = hidden[rows.to(device), (cols - 1).to(device)]
    del hidden
    vocab = int(head.weight.shape[0])
    step = max(1, _LOGIT_CHUNK_ELEMENTS // vocab)
    logp = torch.empty(len(cols), dtype=torch.float32, device=device)
    for i in range(0, len(cols), step):
        logits = head(h[i : i + step]).float()
        logp[i : i + step] = logits.gather(1, targets[i : i + step, None])[:, 0] - logits.logsumexp(-1)
    sums = torch.zeros(n, dtype=torch.float64, device=device).index_add_(0, rows.to(device), logp.double())
    return [(float(v), len(s.targets)) for v, s in zip(sums.tolist(), seqs, strict=True)]


def cache_argument(model: Any) -> str:
    """The name of ``model.forward``'s key/value cache argument (transformers 5 renamed ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def model_cache(output: Any) -> Any:
    """The key/value cache a forward returned (``cache``, or ``past_key_values`` before transformers 5)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def loss_metrics(logprob_sum: float, tokens: int) -> dict[str, float]:
    loss_sum = -logprob_sum
    loss_mean = loss_sum / tokens
    return {
        "loss_sum": loss_sum,
        "loss_mean": loss_mean,
        "tokens": float(tokens),
        "perplexity": math.exp(min(loss_mean, 700.0)),  # capped: exp overflows a float past ~709
    }


def reference_logprob(model: Any, seq: Encoded, device: torch.device, **inputs: Any) -> tuple[float, int]:
    """(sum log p, count) of one sequence the obvious way: one unpadded full forward, transformers' own
    shifted cross-entropy over labels that are -100 except at the counted positions."""
    ids = torch.tensor([seq.ids], device=device)
    labels = torch.full_like(ids, -100)
    labels[0, seq.targets] = ids[0, seq.targets]
    out = model(input_ids=ids, labels=labels, use_cache=False, **inputs)
    n = len(seq.targets)
    return -float(out.loss) * n, n


def length_buckets(lengths: Sequence[float], batch_size: int) -> list[list[int]]:
    """Indices sorted longest first, cut into batches: little padding, and an OOM shows up first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# --- scorers ---------------------------------------------------------------------------------------


class _LossScorer(Scorer):
    """Shared by the three loss scorers: model, encoder, batched forward with OOM back-off."""

    params: LmLossParams | MllmLossParams
    window_factor = 16

    def _forward(self, seqs: list[Encoded], pixel_values: torch.Tensor | None = None) -> list[tuple[float, int]]:
        with torch.inference_mode():
            return answer_logprobs(
                self.base,
                self.head,
                seqs,
                pad_id=self.pad_id,
                device=self.device,
                pixel_values=pixel_values,
                padding_mask=not self.causal,
            )

    def _setup(self, model: Any, tokenizer: Any, **encoder_kwargs: Any) -> None:
        self.model = model
        self.causal = self._purely_causal(model)
        self.base, self.head = split_head(model)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))
        self.encoder = ConversationEncoder(
            tokenizer,
            template=self.params.template,
            include_eos=self.params.include_eos,
            max_length=self.params.max_length or model_max_length(model, tokenizer),
            **encoder_kwargs,
        )

    @staticmethod
    def _purely_causal(model: Any) -> bool:
        """Whether every token attends only to earlier ones (then the padding mask can be dropped)."""
        cfg = model.config
        if getattr(cfg, "is_encoder_decoder", False):
            return False
        text_cfg = getattr(cfg, "text_config", None)
        if text_cfg is None:
            return True  # a decoder-only causal LM (AutoModelForCausalLM)
        # Multimodal models: only those known to keep image tokens under the plain causal mask
        # (some, e.g. Gemma 3, let image tokens attend both ways).
        return cfg.model_type in _CAUSAL_MULTIMODAL

    def length_hint(self, item: ScoreItem) -> float:
        """About the sample's token count, before tokenizing, for length buckets: ~4 characters a token,
        ~4 tokens of role markers a turn, plus the image tokens."""
        text = sum(len(c.get("value") or "") / 4 + 4 for c in item.conversations)
        return text + len(item.images) * self.encoder.n_image_tokens

    def _encoded(
        self, items: list[ScoreItem], encode: Callable[[ScoreItem], Any]
    ) -> Iterator[tuple[list[Any], list[ScoreResult]]]:
        """(encoded, failed) groups of the window. Without loader workers: the whole window, encoded here
        (exact lengths then bucket it best). With them: groups of samples of about the same estimated
        length, encoded in the workers while the model runs on the group before. A group holds a few
        batches, so that the caller's buckets by exact length correct the estimate (on the benchmark's
        samples, padding: lm_loss 7% against 6% for the whole window, ifd 12% against 9%; 11% and 27%
        with groups of one batch)."""
        if self.num_workers <= 0:
            groups: Iterator[list[Any]] = iter([each(encode)(items)])
        else:
            batches = length_buckets([self.length_hint(it) for it in items], self.batch_size * 4)
            groups = self.loader("encode", each(encode)).batches(items, batches)
        for group in groups:
            yield (
                [x for x in group if not isinstance(x, Failed)],
                [self.failed(x.sample_id, x.error) for x in group if isinstance(x, Failed)],
            )


class LmLossScorer(_LossScorer):
    """Answer-token loss of a text-only causal LM (``<image>`` tokens removed)."""

    kind = "lm_loss"
    params: LmLossParams

    def _load(self) -> None:
        key = model_key("lm", self.params.model, self.device, self.dtype)
        model, tokenizer = cached_model(key, lambda: load_lm(self.params.model, self.device, self.dtype))
        self._setup(model, tokenizer)

    def _score_window(self, items: list[ScoreItem]) -> Iterator[ScoreResult]:
        for seqs, failed in self._encoded(items, self.encoder.encode):
            yield from failed
            for batch in length_buckets([len(s.ids) for s in seqs], self.batch_size):
                yield from self.run_with_backoff([seqs[i] for i in batch], self._score_batch, lambda s: s.sample_id)

    def _score_batch(self, seqs: list[Encoded]) -> list[ScoreResult]:
        return [
            ScoreResult(s.sample_id, loss_metrics(lp, n), None)
            for s, (lp, n) in zip(seqs, self._forward(seqs), strict=True)
        ]


    @torch.inference_mode()
    def reference(self, item: ScoreItem) -> ScoreResult:
        """The slow, obvious computation for one sample (tests and the benchmark compare with it)."""
        self.load()
        try:
            seq = self.encoder.encode(item)
        except SampleError as e:
            return self.failed(item.sample_id, str(e))
        return ScoreResult(item.sample_id, loss_metrics(*reference_logprob(self.model, seq, self.device)), None)


class IfdScorer(LmLossScorer):
    """IFD = loss_mean(answer | question) / loss_mean(answer alone), one LM (Cherry LLM)."""

    kind = "ifd"
    params: IfdParams

    def _encode_pair(self, item: ScoreItem) -> tuple[Encoded, list[Encoded]]:
        return self.encoder.encode(item), self.encoder.encode_answers_alone(item)

    def _score_window(self, items: list[ScoreItem]) -> Iterator[ScoreResult]:
        for pairs, failed in self._encoded(items, self._encode_pair):
            yield from failed
            yield from self._score_pairs(pairs)

    def _score_pairs(self, pairs: list[tuple[Encoded, list[Encoded]]]) -> Iterator[ScoreResult]:
        # every sequence (in context and alone) goes through the same length buckets
        seqs: list[tuple[int, int, Encoded]] = []  # (pair index, 0 = in context | 1 = alone, sequence)
        for k, (cond, alone) in enumerate(pairs):
            seqs.append((k, 0, cond))
            seqs.extend((k, 1, a) for a in alone)
        totals = [[0.0, 0.0, 0.0, 0.0] for _ in pairs]  # cond logp, cond n, alone logp, alone n
        errors: dict[int, str] = {}
        for batch in length_buckets([len(s.ids) for _, _, s in seqs], self.batch_size):
            rows = [seqs[i] for i in batch]
            results = self.run_with_backoff(rows, self._partial, lambda r: r[2].sample_id)
            for (k, which, _), r in zip(rows, results, strict=True):
                if r.error is not None or r.metrics is None:
                    errors[k] = r.error or "failed"
                    continue
                totals[k][2 * which] += r.metrics["logp"]
                totals[k][2 * which + 1] += r.metrics["n"]
        for k, (cond, _) in enumerate(pairs):
            if k in errors:
                yield self.failed(cond.sample_id, errors[k])
                continue
            lp_c, n_c, lp_a, n_a = totals[k]
            yield self._ifd_result(cond.sample_id, lp_c, int(n_c), lp_a, int(n_a))

    @torch.inference_mode()
    def reference(self, item: ScoreItem) -> ScoreResult:
        """The slow, obvious computation for one sample: one unpadded forward per sequence."""
        self.load()
        try:
            cond, alone = self._encode_pair(item)
        except SampleError as e:
            return self.failed(item.sample_id, str(e))
        lp_c, n_c = reference_logprob(self.model, cond, self.device)
        parts = [reference_logprob(self.model, a, self.device) for a in alone]
        return self._ifd_result(item.sample_id, lp_c, n_c, sum(lp for lp, _ in parts), sum(n for _, n in parts))

    def _ifd_result(self, sample_id: int, lp_cond: float, n_cond: int, lp_alone: float, n_alone: int) -> ScoreResult:
        loss_cond, loss_direct = -lp_cond / n_cond, -lp_alone / n_alone
        if loss_direct <= 0:
            return self.failed(sample_id, "answer alone has zero loss")  # the ratio is undefined
        metrics = {"ifd": loss_cond / loss_direct, "loss_cond": loss_cond, "loss_direct": loss_direct}
        return ScoreResult(sample_id, {**metrics, "tokens": float(n_cond)}, None)

    def _partial(self, rows: list[tuple[int, int, Encoded]]) -> list[ScoreResult]:
        out = self._forward([s for _, _, s in rows])
        return [
            ScoreResult(s.sample_id, {"logp": lp, "n": float(n)}, None)
            for (_, _, s), (lp, n) in zip(rows, out, strict=True)
        ]
