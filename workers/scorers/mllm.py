"""The paper's loss, ``mllm_loss``: a LLaVA-style model reads the conversation with its images (the computation
shared with ``lm_loss``/``ifd`` is in :mod:`workers.scorers.lm`; the optional ``image_gain`` and
``question_gain`` metrics, and how a sample without an image gets them, in :mod:`workers.scorers.mllm_gain`)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from backend.scorer_specs import MllmLossParams, ScoreItem, ScoreResult
from workers.scorers.base import (
    IMAGE_TOKEN,
    Failed,
    SampleError,
    cached_model,
    load_image,
    model_key,
    preprocess_error,
)
from workers.scorers.conversation import Encoded
from workers.scorers.lm import (
    _LossScorer,
    answer_logprobs,
    length_buckets,
    load_mllm,
    loss_metrics,
    model_cache,
    reference_logprob,
)
from workers.scorers.mllm_gain import Variants, encode_variants, gain_result, no_question_item, score_with_variants


@dataclass
class _MllmInput:
    seq: Encoded
    pixel_values: torch.Tensor | None  # [n_images, 3, H, W]
    variants: Variants | None = None  # the changed prompts of image_gain / question_gain

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
    """The paper's loss: a LLaVA-style model reads the conversation with its images.

    With ``image_gain`` / ``question_gain`` each batch gets one more model pass per option (the prompt
    without the images / without the questions); see :mod:`workers.scorers.mllm_gain`. A text-only sample
    keeps its other metrics and lists ``loss_no_image`` and ``image_gain`` in ``ScoreResult.omitted``
    ("no image"): it is not an error.
    """

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
            return _MllmInput(seq, None, self._variants(seq))
        images = [load_image(p) for p in seq.item.images]
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return _MllmInput(seq, pixels, self._variants(seq))

    @property
    def gains(self) -> bool:
        return self.params.image_gain or self.params.question_gain

    def _variants(self, seq: Encoded) -> Variants | None:
        if not self.gains:
            return None
        assert seq.item is not None
        return encode_variants(
            self.encoder,
            seq.item,
            seq,
            image_gain=self.params.image_gain,
            question_gain=self.params.question_gain,
        )

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
            out.append(_MllmInput(seq, None, self._variants(seq)))
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
        if not self.gains:
            pix = [x.pixel_values for x in batch if x.pixel_values is not None]
            pixel_values = torch.cat(pix).to(self.device, self.dtype, non_blocking=True) if pix else None
            out = self._forward([x.seq for x in batch], pixel_values)
            return [ScoreResult(x.sample_id, loss_metrics(lp, n), None) for x, (lp, n) in zip(batch, out, strict=True)]
        # Pixels go to the device once, even when the prompt without the questions reads them again.
        rows = [
            (x.seq, None if x.pixel_values is None else x.pixel_values.to(self.device, self.dtype, non_blocking=True))
            for x in batch
        ]
        # The shared-prefix pass leaves out the padding mask: exact for purely causal models only.
        shared = self._forward_shared if self.causal and self.params.question_gain else None
        variants = [x.variants or Variants() for x in batch]
        return score_with_variants(self._forward_rows, rows, variants, shared, self.encoder.image_token_id)

    def _forward_shared(
        self, rows: list[tuple[Encoded, torch.Tensor | None]], others: list[Encoded], prefix: int
    ) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
        """The rows' log p and those of ``others`` (each row's prompt without the questions), the first
        ``prefix`` tokens (the same in both, images included) read once: one call over the prefixes, which
        keeps their keys and values, then one over each set of continuations."""
        pix = [p for _, p in rows if p is not None]
        with torch.inference_mode():
            ids = torch.tensor([s.ids[:prefix] for s, _ in rows]).to(self.device, non_blocking=True)
            kwargs: dict[str, Any] = {"pixel_values": torch.cat(pix)} if pix else {}
            cache = model_cache(self.base(input_ids=ids, use_cache=True, **kwargs))
            main = answer_logprobs(
                self.base, self.head, [s for s, _ in rows], pad_id=self.pad_id, device=self.device,
                padding_mask=False, cache=copy.deepcopy(cache), offset=prefix,
            )  # fmt: skip
            other = answer_logprobs(
                self.base, self.head, others, pad_id=self.pad_id, device=self.device, padding_mask=False,
                cache=cache, offset=prefix,
            )  # fmt: skip
        return main, other

    def _forward_rows(self, rows: list[tuple[Encoded, torch.Tensor | None]]) -> list[tuple[float, int]]:
        """One model call over the sequences, with the pixels of those that show images, in row order."""
        pix = [p for _, p in rows if p is not None]
        return self._forward([s for s, _ in rows], torch.cat(pix) if pix else None)

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
        main = self._reference_logprob(item, images, seq)
        v = self._variants(seq)
        if v is None:
            return ScoreResult(item.sample_id, loss_metrics(*main), None)
        # The changed prompts the same obvious way: the processor on the prompt without the images (no
        # pixels) / without the questions (the images), one unpadded call each.
        no_image = self._reference_logprob(item, [], v.no_image) if v.no_image is not None else None
        nq = v.no_question
        no_question = self._reference_logprob(no_question_item(item), images, nq) if nq is not None else None
        return gain_result(item.sample_id, main, no_image, no_question, v.omitted)

    def _reference_logprob(self, item: ScoreItem, images: list[Any], seq: Encoded) -> tuple[float, int]:
        text, _ = self.encoder.render(item.conversations, len(images))
        inputs = self.processor(text=[text], images=images or None, return_tensors="pt")
        if inputs["input_ids"][0].tolist()[: self.encoder.max_length] != seq.ids:  # the scorer cuts there too
            raise RuntimeError("the processor tokenized the prompt differently from the scorer")
        extra = {"pixel_values": inputs["pixel_values"].to(self.device, self.dtype)} if images else {}
        return reference_logprob(self.model, seq, self.device, **extra)
