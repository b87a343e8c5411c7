"""``mllm_loss``'s optional metrics: how much the answers need the image, and how much they need the questions.

Each is one more pass of the same model over the same answer tokens, with a changed prompt:

- ``image_gain: true`` -- the conversation rendered without its images (as a text-only sample is rendered,
  no pixels): ``loss_no_image`` = loss_mean there, and ``image_gain = loss_no_image - loss_mean`` (nats per
  answer token; positive = the image helps: MAGIC's multimodal gain).
- ``question_gain: true`` -- every question's text removed, the images kept where the data put them
  (:func:`~workers.scorers.conversation.without_questions`): ``loss_no_question`` = loss_mean there, and
  ``mifd = loss_mean / loss_no_question`` (PreSel's multimodal instruction-following difficulty). A
  text-only sample is scored too: its answers given nothing at all (IFD's "answer alone", in context).

"The same answer tokens": the changed prompt counts the tokens the full one counts, in the same order (when
``max_length`` cut the full sequence, the first as many of its answer tokens); should they ever tokenize
differently, the metrics are omitted rather than compared across different tokens.

A sample that cannot have a metric (no image for ``image_gain``, a prompt the chat template refuses) is still
a scored sample: ``ScoreResult.metrics`` holds ``loss_*`` and whichever extra metrics it has, ``error`` stays
None (runs count an error as a failed sample, and the store drops the metrics of one), and
``ScoreResult.omitted`` names each missing metric with its reason, e.g. ``{"loss_no_image": "no image",
"image_gain": "no image"}``. In the store the metric is then simply absent from the sample's row, so an axis
on it leaves the sample out, like any missing value (never a NaN).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from backend.scorer_specs import ScoreItem, ScoreResult
from workers.scorers.base import SampleError
from workers.scorers.conversation import ConversationEncoder, Encoded, without_questions
from workers.scorers.lm import loss_metrics

# Read a shared prefix once only when it is at least this share of the prompts without the questions (LLaVA-1.5:
# 576 image tokens of ~700, ~80%). Continuing from a cache costs something of its own (one more model call, the
# cache copied, attention under an explicit mask): with the tiny CPU models, prefixes of 18-37% of the prompts,
# the model step took 2.6x the base scorer's shared against 2.1x without (2026-12-03; not measured on a GPU).
SHARE_MIN_FRACTION = 0.5

NO_IMAGE = ("loss_no_image", "image_gain")
NO_QUESTION = ("loss_no_question", "mifd")

LogProb = tuple[float, int]  # (sum of log p over the counted tokens, their count)
Row = tuple[Encoded, torch.Tensor | None]  # a sequence and the pixels of its images (None: no image)


@dataclass
class Variants:
    """The extra sequences of one sample, and the optional metrics it has no value for, with the reason."""

    no_image: Encoded | None = None
    no_question: Encoded | None = None
    omitted: dict[str, str] = field(default_factory=dict)


def same_answers(main: Encoded, other: Encoded) -> Encoded:
    """``other`` counting exactly the answer tokens ``main`` counts (the changed prompt is never longer, so a
    cut at ``max_length`` leaves it at least as many); SampleError if they are other tokens."""
    targets = other.targets[: len(main.targets)]
    if [other.ids[p] for p in targets] != [main.ids[p] for p in main.targets]:
        raise SampleError("the answer tokenizes differently")
    return replace(other, targets=targets, item=None)


def no_question_item(item: ScoreItem) -> ScoreItem:
    return replace(item, conversations=without_questions(item.conversations))


def encode_variants(
    encoder: ConversationEncoder, item: ScoreItem, main: Encoded, *, image_gain: bool, question_gain: bool
) -> Variants:
    """The sample's changed prompts, encoded like ``main``; never raises (a failure omits its metrics)."""
    v = Variants()
    if image_gain:
        if not item.images:
            v.omitted.update(dict.fromkeys(NO_IMAGE, "no image"))
        else:
            try:
                v.no_image = same_answers(main, encoder.encode(item, n_images=0))
            except SampleError as e:
                v.omitted.update(dict.fromkeys(NO_IMAGE, f"without the image: {e}"[:200]))
    if question_gain:
        try:
            v.no_question = same_answers(main, encoder.encode(no_question_item(item), n_images=len(item.images)))
        except SampleError as e:
            v.omitted.update(dict.fromkeys(NO_QUESTION, f"without the questions: {e}"[:200]))
    return v


def gain_result(sample_id: int, main: LogProb, no_image: LogProb | None, no_question: LogProb | None,
                omitted: dict[str, str]) -> ScoreResult:
    """The sample's loss metrics plus the extra ones it has (``omitted``: those it has not, and why)."""
    metrics = loss_metrics(*main)
    omitted = dict(omitted)
    if no_image is not None:
        metrics["loss_no_image"] = -no_image[0] / no_image[1]
        metrics["image_gain"] = metrics["loss_no_image"] - metrics["loss_mean"]
    if no_question is not None:
        metrics["loss_no_question"] = -no_question[0] / no_question[1]
        if metrics["loss_no_question"] > 0:
            metrics["mifd"] = metrics["loss_mean"] / metrics["loss_no_question"]
        else:  # the ratio is undefined; the rest of the sample stands
            omitted["mifd"] = "the answers without the questions have zero loss"
    return ScoreResult(sample_id, metrics, None, omitted or None)


# (rows, their prompts without the questions, the shared prefix length) -> (log p of each, log p of each)
SharedForward = Callable[[list[Row], list[Encoded], int], tuple[list[LogProb], list[LogProb]]]


def shared_prefix(rows: list[Row], variants: list[Variants], image_token_id: int | None) -> int:
    """How many first tokens every full prompt of the batch has in common with its prompt without the
    questions, before any answer token and with every image in it (0: no such prefix, or a sample without
    that prompt). The model then reads that prefix, the images' hundreds of tokens in LLaVA, once for both."""
    length, images_end = 1 << 30, 0
    for (seq, _), v in zip(rows, variants, strict=True):
        other = v.no_question
        if other is None:
            return 0
        same = next((i for i, (a, b) in enumerate(zip(seq.ids, other.ids, strict=False)) if a != b), 0)
        length = min(length, same, seq.targets[0] - 1, other.targets[0] - 1)
        if image_token_id is not None and image_token_id in seq.ids:
            images_end = max(images_end, len(seq.ids) - seq.ids[::-1].index(image_token_id))
    # An image past the prefix (after a question, or a text-only sample's short prefix in the batch) would be
    # read in each prompt anyway: no sharing then.
    return length if length >= max(images_end, 1) else 0


def score_with_variants(
    forward_rows: Callable[[list[Row]], list[LogProb]],
    rows: list[Row],
    variants: list[Variants],
    forward_shared: SharedForward | None = None,
    image_token_id: int | None = None,
) -> list[ScoreResult]:
    """One batch: the full prompts, then the prompts without images, then those without questions -- one
    model call each (each no larger than the batch, so memory and the out-of-memory back-off behave as
    for the base scorer). With ``forward_shared`` (purely causal models), the full prompts and those without
    the questions share the reading of their common prefix (see :func:`shared_prefix`) when it is a large
    part of them (:data:`SHARE_MIN_FRACTION`)."""
    extra: dict[str, list[LogProb | None]] = {}
    prefix = shared_prefix(rows, variants, image_token_id) if forward_shared is not None else 0
    nq_seqs = [v.no_question for v in variants if v.no_question is not None]
    if forward_shared is not None and prefix > 0 and prefix * len(rows) >= SHARE_MIN_FRACTION * sum(
        len(s.ids) for s in nq_seqs
    ):
        main, nq = forward_shared(rows, nq_seqs, prefix)
        extra["no_question"] = list(nq)
    else:
        main = forward_rows(rows)
    for name, keep_pixels in (("no_image", False), ("no_question", True)):
        if name in extra:
            continue
        todo = [(k, getattr(v, name)) for k, v in enumerate(variants) if getattr(v, name) is not None]
        got: list[LogProb | None] = [None] * len(rows)
        if todo:
            out = forward_rows([(seq, rows[k][1] if keep_pixels else None) for k, seq in todo])
            for (k, _), lp in zip(todo, out, strict=True):
                got[k] = lp
        extra[name] = got
    return [
        gain_result(seq.sample_id, m, extra["no_image"][k], extra["no_question"][k], variants[k].omitted)
        for k, ((seq, _), m) in enumerate(zip(rows, main, strict=True))
    ]
