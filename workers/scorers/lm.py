"""Answer-token loss: ``mllm_loss`` (LLaVA-style, with the images), ``lm_loss`` (text LM) and ``ifd``.

All three share one computation: render the conversation (the model's chat template, or LLaVA-1.5's
``USER: <image>\\n{q} ASSISTANT: {a}</s>USER: ...``), tokenize it with character offsets, count the
tokens that overlap an answer (plus the end-of-turn token right after it, as LLaVA's training loss
does), then run the base model once per length-bucketed batch and apply the output head only at the
counted positions, a chunk at a time: a full-vocabulary float32 logits tensor is never built for the
batch. ``loss_sum`` = -sum log p(answer tokens) is the paper's formula.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from backend.scorer_specs import IfdParams, LmLossParams, MllmLossParams, ScoreItem, ScoreResult
from workers.scorers.base import (
    IMAGE_TOKEN,
    Failed,
    SampleError,
    Scorer,
    cached_model,
    each,
    load_image,
    model_key,
    preprocess_error,
    strip_image_token,
)

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


# --- encoding --------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """One token sequence: ``ids[p]`` for ``p`` in ``targets`` are the counted tokens."""

    sample_id: int
    ids: list[int]
    targets: list[int]  # ascending, each >= 1 (position 0 has nothing to predict it)
    n_images: int = 0
    item: ScoreItem | None = field(default=None, repr=False)


def _turn_images(conversations: Sequence[dict[str, str]], n_images: int) -> list[tuple[str, str, int]]:
    """(role, text, images before it) per turn: where the data put ``<image>``, else all on the first
    human turn (LLaVA moves the image to the start of its turn)."""
    rows = [
        (c["from"], strip_image_token(c.get("value") or ""), (c.get("value") or "").count(IMAGE_TOKEN))
        for c in conversations
        if c.get("from") in ("human", "gpt")
    ]
    if sum(k for _, _, k in rows) == n_images:
        return rows
    first = next((i for i, (r, _, _) in enumerate(rows) if r == "human"), 0)
    return [(r, t, n_images if i == first else 0) for i, (r, t, _) in enumerate(rows)]


class ConversationEncoder:
    """Renders a conversation and tokenizes it, marking the answer tokens by character offsets."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        template: str,
        include_eos: bool,
        max_length: int,
        template_owner: Any = None,
        structured: bool = False,
        image_token_id: int | None = None,
        n_image_tokens: int = 0,
    ) -> None:
        if not getattr(tokenizer, "is_fast", True):
            raise ValueError("model: needs a fast (tokenizers) tokenizer for character offsets")
        self.tokenizer = tokenizer
        owner = template_owner if template_owner is not None else tokenizer
        self.chat_owner = owner if template == "auto" and getattr(owner, "chat_template", None) else None
        self.structured = structured
        self.include_eos = include_eos
        self.max_length = max_length
        self.image_token_id = image_token_id
        self.n_image_tokens = n_image_tokens
        self.bos_id: int | None = tokenizer.bos_token_id
        self.sep = tokenizer.eos_token or "\n"
        self.special_ids = set(tokenizer.all_special_ids) | {
            i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)
        }
        self.special_ids.discard(image_token_id)

    # -- rendering
    def render(self, conversations: Sequence[dict[str, str]], n_images: int) -> tuple[str, list[tuple[int, int]]]:
        """(prompt text with one ``<image>`` per image, character spans of the answers)."""
        rows = _turn_images(conversations, n_images)
        if self.chat_owner is not None:
            return self._render_chat(rows)
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        pos = 0
        for role, text, k in rows:
            if role == "human":
                piece = "USER: " + (IMAGE_TOKEN + "\n") * k + text + " "
            else:
                head = "ASSISTANT: " + (IMAGE_TOKEN + "\n") * k
                if text:
                    spans.append((pos + len(head), pos + len(head) + len(text)))
                piece = head + text + self.sep
            parts.append(piece)
            pos += len(piece)
        return "".join(parts), spans

    def _render_chat(self, rows: list[tuple[str, str, int]]) -> tuple[str, list[tuple[int, int]]]:
        messages: list[dict[str, Any]] = []
        for role, text, k in rows:
            content: Any = text
            if self.structured:
                content = [{"type": "image"}] * k + [{"type": "text", "text": text}]
            messages.append({"role": "user" if role == "human" else "assistant", "content": content})
        assert self.chat_owner is not None
        try:
            rendered = self.chat_owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        except Exception as e:  # e.g. a template that insists on user/assistant alternation
            raise SampleError(f"chat template failed: {e}"[:200]) from None
        if not isinstance(rendered, str):
            rendered = rendered[0]
        spans = []
        cursor = 0
        for role, text, _ in rows:  # find each turn's text in order, so a question quoting an answer can't fool it
            if not text:
                continue
            at = rendered.find(text, cursor)
            if at < 0:
                raise SampleError("chat template changed the text")
            if role == "gpt":
                spans.append((at, at + len(text)))
            cursor = at + len(text)
        return rendered, spans

    # -- tokenizing
    def _tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        tok = self.tokenizer
        add_special = not (tok.bos_token and text.startswith(tok.bos_token))  # template wrote BOS itself
        enc = tok(text, add_special_tokens=add_special, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        if self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            # GPT-2 style tokenizers add no BOS: without it the first token has no prediction
            ids.insert(0, self.bos_id)
            offsets.insert(0, (0, 0))
        return ids, offsets

    def _counted(
        self, ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]
    ) -> tuple[list[int], list[int | None]]:
        """(counted positions, per answer span the end-of-turn token id counted after it or None)."""
        counted: list[int] = []
        ends: list[int | None] = [None] * len(spans)
        j = 0
        for i, (s, e) in enumerate(offsets):
            if s == e:
                continue
            while j < len(spans) and spans[j][1] <= s:
                j += 1
            if j < len(spans) and s < spans[j][1] and e > spans[j][0]:
                counted.append(i)
                # the end-of-turn token right after an answer's last token (</s>, <|im_end|>, ...)
                nxt = i + 1
                is_last = nxt >= len(offsets) or offsets[nxt][0] >= spans[j][1] or offsets[nxt][0] == offsets[nxt][1]
                if self.include_eos and is_last and nxt < len(ids) and ids[nxt] in self.special_ids:
                    counted.append(nxt)
                    ends[j] = ids[nxt]
        return [p for p in counted if p >= 1], ends

    def _finish(self, sample_id: int, ids: list[int], counted: list[int], n_images: int) -> Encoded:
        """Expand each image token to the model's feature count, cut at ``max_length``."""
        if self.image_token_id is not None and n_images:
            found = sum(1 for t in ids if t == self.image_token_id)
            if found != n_images:
                raise SampleError(f"prompt has {found} image tokens for {n_images} images")
            counted_set = set(counted)
            new_ids: list[int] = []
            new_counted: list[int] = []
            for i, t in enumerate(ids):
                if t == self.image_token_id:
                    new_ids.extend([t] * self.n_image_tokens)
                    continue
                if i in counted_set:
                    new_counted.append(len(new_ids))
                new_ids.append(t)
            ids, counted = new_ids, new_counted
        if len(ids) > self.max_length:
            if self.image_token_id is not None and self.image_token_id in ids[self.max_length :]:
                raise SampleError(f"too long: {len(ids)} tokens > {self.max_length}")
            ids = ids[: self.max_length]
            counted = [p for p in counted if p < self.max_length]
        if not counted:
            raise SampleError("empty answer" if len(ids) < self.max_length else "too long")
        return Encoded(sample_id, ids, counted, n_images)

    def encode(self, item: ScoreItem, n_images: int = 0) -> Encoded:
        """The whole conversation; counted = the answers (and their end-of-turn tokens)."""
        text, spans = self.render(item.conversations, n_images)
        if not spans:
            raise SampleError("empty answer")
        ids, offsets = self._tokenize(text)
        counted, _ = self._counted(ids, offsets, spans)
        return self._finish(item.sample_id, ids, counted, n_images)

    def encode_answers_alone(self, item: ScoreItem) -> list[Encoded]:
        """Each answer on its own: BOS + answer (+ the end-of-turn token counted after it in context).

        Position 0 is never counted: without a BOS the first answer token has no prediction.
        """
        text, spans = self.render(item.conversations, 0)
        ids, offsets = self._tokenize(text)
        _, ends = self._counted(ids, offsets, spans)
        out = []
        for (a0, a1), end in zip(spans, ends, strict=True):
            seq = [self.bos_id] if self.bos_id is not None else []
            seq += list(self.tokenizer(text[a0:a1], add_special_tokens=False)["input_ids"])
            seq += [end] if end is not None else []
            seq = seq[: self.max_length]
            if len(seq) > 1:
                out.append(Encoded(item.sample_id, seq, list(range(1, len(seq)))))
        if not out:
            raise SampleError("empty answer")
        return out


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
) -> list[tuple[float, int]]:
    """(sum of log p(token), count) over each sequence's targets: one right-padded forward, the head
    applied at the target positions only, in chunks.

    ``padding_mask=False`` is exact for purely causal models: with right padding a real token never
    attends to a later (padded) position, so the causal mask alone suffices, and attention takes its
    fast unmasked kernels (flash on CUDA).
    """
    n, width = len(seqs), max(len(s.ids) for s in seqs)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s.ids)] = torch.tensor(s.ids)
        mask[b, : len(s.ids)] = 1
    rows = torch.cat([torch.full((len(s.targets),), b, dtype=torch.long) for b, s in enumerate(seqs)])
    cols = torch.cat([torch.tensor(s.targets, dtype=torch.long) for s in seqs])
    targets = ids[rows, cols].to(device, non_blocking=True)
    kwargs: dict[str, Any] = {"input_ids": ids.to(device, non_blocking=True), "use_cache": False}
    if padding_mask:
        kwargs["attention_mask"] = mask.to(device, non_blocking=True)
    if pixel_values is not None:
        kwargs["pixel_values"] = pixel_values
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


@dataclass
class _MllmInput:
    seq: Encoded
    pixel_values: torch.Tensor | None  # [n_images, 3, H, W]

    @property
    def sample_id(self) -> int:
        return self.seq.sample_id


def n_image_tokens(model: Any, processor: Any) -> int:
    """Tokens one image expands to; ValueError when it depends on the image size (anyres)."""
    counts = set()
    if hasattr(processor, "_get_num_multimodal_tokens"):
        for size in ((336, 336), (200, 700)):
            counts.add(int(processor._get_num_multimodal_tokens(image_sizes=[size]).num_image_tokens[0]))
    else:
        counts.add(int(model.config.image_seq_length))
    if len(counts) != 1:
        raise ValueError("model: image token count depends on image size (anyres): unsupported")
    return counts.pop()


def mllm_encoder_kwargs(model: Any, processor: Any) -> dict[str, Any]:
    """How a LLaVA-style (model, processor) renders and counts a conversation: the one place the scorer, training
    (labels) and evaluation (option log-likelihoods) take it from, so all three count the same tokens."""
    tokenizer = processor.tokenizer
    return {
        "template_owner": processor,
        "structured": True,
        "image_token_id": tokenizer.convert_tokens_to_ids(getattr(processor, "image_token", IMAGE_TOKEN)),
        "n_image_tokens": n_image_tokens(model, processor),
    }


class MllmLossScorer(_LossScorer):
    """The paper's loss: a LLaVA-style model reads the conversation with its images."""

    kind = "mllm_loss"
    params: MllmLossParams

    def _load(self) -> None:
        key = model_key("mllm", self.params.model, self.device, self.dtype)
        model, processor = cached_model(key, lambda: load_mllm(self.params.model, self.device, self.dtype))
        self.processor = processor
        self.image_processor = processor.image_processor
        self._setup(model, processor.tokenizer, **mllm_encoder_kwargs(model, processor))

    def prepare(self, seq: Encoded) -> _MllmInput:
        """Decode and preprocess the sample's images (runs in loader workers)."""
        assert seq.item is not None
        if not seq.item.images:
            return _MllmInput(seq, None)
        images = [load_image(p) for p in seq.item.images]
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return _MllmInput(seq, pixels)

    def prepare_batch(self, items: list[ScoreItem]) -> list[_MllmInput | Failed]:
        """Encode a piece of a batch (render, tokenize) and decode and preprocess its images, with one
        image-processor call for all of them (the same pixels as one call per sample: a fixed-resolution
        processor treats each image alone). Runs in loader workers; never raises."""
        out: list[_MllmInput | Failed] = []
        images: list[Any] = []
        spans: dict[int, tuple[int, int]] = {}  # out index -> its images' rows in the batch
        for item in items:
            try:
                seq = self._encode(item)
                loaded = [load_image(p) for p in item.images]
            except SampleError as e:
                out.append(Failed(item.sample_id, str(e)))
                continue
            except Exception as e:  # one odd sample must not fail the batch
                out.append(Failed(item.sample_id, preprocess_error(e)))
                continue
            out.append(_MllmInput(seq, None))
            if loaded:
                spans[len(out) - 1] = (len(images), len(images) + len(loaded))
            images += loaded
        if images:
            try:
                pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
            except Exception:  # an image the processor rejects: process each sample alone
                for k, x in enumerate(out):
                    if isinstance(x, _MllmInput) and x.seq.item is not None and x.seq.item.images:
                        try:
                            out[k] = self.prepare(x.seq)
                        except Exception as e:
                            out[k] = Failed(x.sample_id, preprocess_error(e))
            else:
                for k, (a, b) in spans.items():
                    x = out[k]
                    assert isinstance(x, _MllmInput)
                    x.pixel_values = pixels[a:b]
        for x in out:
            if isinstance(x, _MllmInput):
                x.seq.item = None  # the model needs the tokens alone: less to send back from a worker
        return out

    def _encode(self, item: ScoreItem) -> Encoded:
        seq = self.encoder.encode(item, n_images=len(item.images))
        seq.item = item
        return seq

    def _score_window(self, items: list[ScoreItem]) -> Iterator[ScoreResult]:
        # Encoding and images both happen in the loader (worker processes when num_workers > 0), so the
        # buckets come from a length estimate rather than from the tokens.
        batches = length_buckets([self.length_hint(it) for it in items], self.batch_size)
        for batch in self.loader("prepare_batch", self.prepare_batch).batches(items, batches):
            for x in batch:
                if isinstance(x, Failed):
                    yield self.failed(x.sample_id, x.error)
            ok = [x for x in batch if isinstance(x, _MllmInput)]
            if ok:
                yield from self.run_with_backoff(ok, self._score_batch, lambda x: x.sample_id)

    def _score_batch(self, batch: list[_MllmInput]) -> list[ScoreResult]:
        pix = [x.pixel_values for x in batch if x.pixel_values is not None]
        pixel_values = torch.cat(pix).to(self.device, self.dtype, non_blocking=True) if pix else None
        out = self._forward([x.seq for x in batch], pixel_values)
        return [ScoreResult(x.sample_id, loss_metrics(lp, n), None) for x, (lp, n) in zip(batch, out, strict=True)]

    @torch.inference_mode()
    def reference(self, item: ScoreItem) -> ScoreResult:
        """The slow, obvious computation for one sample: the processor on (prompt, images), one unpadded
        full model call with labels."""
        self.load()
        try:
            seq = self._encode(item)
            images = [load_image(p) for p in item.images]
        except SampleError as e:
            return self.failed(item.sample_id, str(e))
        text, _ = self.encoder.render(item.conversations, len(images))
        inputs = self.processor(text=[text], images=images or None, return_tensors="pt")
        if inputs["input_ids"][0].tolist()[: self.encoder.max_length] != seq.ids:  # the scorer cuts there too
            raise RuntimeError("the processor tokenized the prompt differently from the scorer")
        extra = {"pixel_values": inputs["pixel_values"].to(self.device, self.dtype)} if images else {}
        lp, n = reference_logprob(self.model, seq, self.device, **extra)
        return ScoreResult(item.sample_id, loss_metrics(lp, n), None)
