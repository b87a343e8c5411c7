"""The lmms-eval model of a qspace model: ``qspace_llava`` (``lmms-eval --model qspace_llava --model_args
pretrained=DIR``), a LLaVA-style model loaded as the ``mllm_loss`` scorer loads it, wrapping a
:class:`~workers.evaluation.SuiteEvaluator`. Each request becomes the one-turn conversation (the doc's images and
lmms-eval's context, then the continuation) that the scorer's encoder renders, so a continuation's log-likelihood is
the one the suite evaluator gives the same option (the tests hold them to 1e-4).

- ``loglikelihood``: all continuations of a doc in one right-padded forward. lmms-eval's ``multiple_choice`` picks
  the option with the *smallest* returned value (its own models return a loss), while its ``loglikelihood``
  metrics (perplexity) expect a log-likelihood: so a doc scored over several continuations gets their negative
  log-likelihoods, a lone continuation its log-likelihood; the greedy flag is exact either way.
- ``generate_until``: greedy decoding with ``model.generate`` from the conversation's prompt, at most
  ``max_new_tokens`` new tokens (default 64: these benchmarks want a word or a phrase), cut at the task's ``until``
  strings.
- ``generate_until_multi_round`` and lmms-eval's unconditional requests (``acc_mutual_info``) are refused.

A doc that cannot be scored (an unreadable image, a video, too long) is recorded in ``errors`` and answered with
the worst value (lmms-eval still counts it; :mod:`workers.evaluation.lmms` leaves it out of qspace's metrics).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from PIL import Image
from transformers import GenerationConfig

from backend.scorer_specs import ScoreItem
from workers.evaluation.evaluator import SuiteEvaluator
from workers.scorers.base import SampleError, load_image
from workers.scorers.lm import Encoded

__all__ = ["MODEL_NAME", "QspaceLlava", "Stopped", "manifest", "register"]

MODEL_NAME = "qspace_llava"
PLACEHOLDERS = ("Yes", "No")  # two answers that differ in their first token: generation starts where they part

Key = tuple[str, int]  # (task, doc_id)


class Stopped(Exception):
    """``should_stop()`` turned true during an evaluation."""


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flatten(v)]
    return [] if value is None else [value]


def _image(value: Any) -> Image.Image:
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, (str, os.PathLike)):
        return load_image(str(value))
    raise SampleError(f"visual of type {type(value).__name__}: only images are supported (no video or audio)")


def _conversation(context: str, answer: str, n_images: int) -> ScoreItem:
    turns = [{"from": "human", "value": context}, {"from": "gpt", "value": answer}]
    return ScoreItem(0, turns, [""] * n_images)


class QspaceLlava(lmms):
    """A qspace (LLaVA-style) model as an lmms-eval model. Give ``pretrained`` (a model folder or hub name, loaded
    like the ``mllm_loss`` scorer loads it) or ``evaluator`` (a loaded :class:`SuiteEvaluator`)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        evaluator: SuiteEvaluator | None = None,
        device: str | None = None,
        dtype: str | None = None,
        template: str = "auto",
        max_new_tokens: int = 64,
        should_stop: Callable[[], bool] | None = None,
        batch_size: int | str | None = None,  # lmms-eval passes these to every model; docs go one at a time
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if (pretrained is None) == (evaluator is None):
            raise ValueError("qspace_llava: give pretrained=<model folder or name>, or an evaluator")
        self.evaluator = evaluator or SuiteEvaluator(str(pretrained), device=device, dtype=dtype, template=template)
        self.max_new_tokens = int(max_new_tokens)
        self.should_stop = should_stop
        self.logprobs: dict[Key, list[float]] = {}  # true log-likelihoods, per doc in request order
        self.errors: dict[Key, str] = {}  # docs that could not be scored, and why
        self.responses: dict[Key, str] = {}

    # -- lmms-eval's view of a request
    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    def _images(self, doc_to_visual: Any, doc: Any) -> list[Image.Image]:
        raw = doc_to_visual(doc) if callable(doc_to_visual) else doc_to_visual
        return [_image(v) for v in _flatten(raw)]

    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Stopped

    # -- the computations
    def _pixels(self, images: list[Image.Image], copies: int) -> torch.Tensor | None:
        if not images:
            return None
        ev = self.evaluator
        pixels = ev.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pixels.repeat(copies, 1, 1, 1).to(ev.device, ev.dtype)

    def _scores(self, seqs: list[Encoded], pixels: torch.Tensor | None) -> list[tuple[float, int, bool]]:
        """(sum log p, count, every counted token is the argmax) per sequence: one right-padded forward, the head
        at the counted positions only (the token at p is predicted by the hidden state at p - 1)."""
        ev = self.evaluator
        tok = ev.processor.tokenizer
        pad = int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))
        width = max(len(s.ids) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, : len(s.ids)] = torch.tensor(s.ids)
            mask[b, : len(s.ids)] = 1
        rows = torch.tensor([b for b, s in enumerate(seqs) for _ in s.targets])
        cols = torch.tensor([t for s in seqs for t in s.targets])
        dev = ev.device
        hidden = ev.base(input_ids=ids.to(dev), attention_mask=mask.to(dev), pixel_values=pixels, use_cache=False)[0]
        logits = ev.head(hidden[rows.to(dev), (cols - 1).to(dev)]).float()
        targets = ids[rows, cols].to(dev)
        logp = logits.gather(1, targets[:, None])[:, 0] - logits.logsumexp(-1)
        miss = (logits.argmax(-1) != targets).double()
        sums = torch.zeros(len(seqs), dtype=torch.float64, device=dev).index_add_(0, rows.to(dev), logp.double())
        misses = torch.zeros(len(seqs), dtype=torch.float64, device=dev).index_add_(0, rows.to(dev), miss)
        return [
            (float(v), len(s.targets), m == 0)
            for v, m, s in zip(sums.tolist(), misses.tolist(), seqs, strict=True)
        ]

    def _score_doc(self, key: Key, pairs: list[tuple[str, str]], images: list[Image.Image]) -> list[tuple[float, bool]]:
        enc = self.evaluator.option_encoder
        seqs = [enc.encode(_conversation(ctx, cont.strip(), len(images)), len(images)) for ctx, cont in pairs]
        with torch.inference_mode():
            scored = self._scores(seqs, self._pixels(images, len(seqs)))
        self.logprobs[key] = [lp for lp, _, _ in scored]
        many = len(scored) > 1
        return [(-lp if many else lp, greedy) for lp, _, greedy in scored]

    # -- lmms-eval's interface
    def loglikelihood(self, requests: list[Instance]) -> list[Any]:
        """Per request ``(value, greedy)``, each wrapped in lmms-eval's ``GenerationResult``: since 0.7, lmms-eval
        passes every response through ``unwrap_generation_output``, which turns a bare tuple into its string (and
        ``multiple_choice`` then fails to unpack it); a ``GenerationResult`` comes out as it went in."""
        return [GenerationResult(text=pair) for pair in self._loglikelihood(requests)]

    def _loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        by_doc: dict[tuple[str, str, int], list[int]] = {}
        for k, req in enumerate(requests):
            if len(req.args) != 6:
                raise ValueError("qspace_llava: unconditional log-likelihoods (acc_mutual_info) are not supported")
            _, _, _, doc_id, task, split = req.args
            by_doc.setdefault((task, split, doc_id), []).append(k)
        out: list[tuple[float, bool]] = [(float("nan"), False)] * len(requests)
        for (task, split, doc_id), ks in by_doc.items():
            self._check_stop()
            doc = self._doc(task, split, doc_id)
            pairs = []
            for k in ks:
                ctx, target, *_ = requests[k].args
                pairs.append((ctx, target if isinstance(target, str) else str(target(doc))))
            try:
                values = self._score_doc((task, doc_id), pairs, self._images(requests[ks[0]].args[2], doc))
            except SampleError as e:
                self.errors[(task, doc_id)] = str(e)
                worst = float("inf") if len(ks) > 1 else float("-inf")
                values = [(worst, False)] * len(ks)
            for k, v in zip(ks, values, strict=True):
                out[k] = v
        return out

    def _prompt_ids(self, context: str, n_images: int) -> list[int]:
        """The conversation up to where the answer starts, as the scorer's encoder renders and tokenizes it: the
        tokens two different answers share (a template's own text cannot be mistaken for the answer this way)."""
        enc = self.evaluator.option_encoder
        a, b = (enc.encode(_conversation(context, p, n_images), n_images).ids for p in PLACEHOLDERS)
        n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        return a[:n]

    def _generate(self, context: str, images: list[Image.Image], gen_kwargs: dict[str, Any]) -> str:
        ev = self.evaluator
        prompt = torch.tensor([self._prompt_ids(context, len(images))], device=ev.device)
        tok = ev.processor.tokenizer
        wanted = gen_kwargs.get("max_new_tokens")
        config = GenerationConfig(
            max_new_tokens=min(int(wanted), self.max_new_tokens) if wanted else self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            eos_token_id=ev.model.generation_config.eos_token_id,
        )
        with torch.inference_mode():
            out = ev.model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                pixel_values=self._pixels(images, 1),
                generation_config=config,
            )
        text = str(tok.decode(out[0, prompt.shape[1] :], skip_special_tokens=True))
        until = gen_kwargs.get("until") or []
        for stop in [until] if isinstance(until, str) else until:
            if stop:
                text = text.split(stop)[0]
        return text

    def generate_until(self, requests: list[Instance]) -> list[str]:
        out = []
        for req in requests:
            self._check_stop()
            ctx, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            key = (task, doc_id)
            try:
                text = self._generate(ctx, self._images(doc_to_visual, self._doc(task, split, doc_id)), gen_kwargs)
            except SampleError as e:
                self.errors[key] = str(e)
                text = ""
            self.responses[key] = text
            out.append(text)
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("qspace_llava: multi-round generation is not supported")


def manifest() -> Any:
    """lmms-eval's registration of :class:`QspaceLlava` (also the ``lmms_eval.models`` entry point)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.QspaceLlava")


def register() -> None:
    """Make ``qspace_llava`` known to lmms-eval's model registry (the entry point does it once qspace is
    installed; this covers a source checkout). Skipped while lmms-eval is still importing its registry, which
    then loads the entry point itself."""
    models = sys.modules.get("lmms_eval.models") or importlib.import_module("lmms_eval.models")
    registry = getattr(models, "MODEL_REGISTRY_V2", None)
    if registry is not None:
        registry.register_manifest(manifest(), overwrite=True)


register()
