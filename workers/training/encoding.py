"""The ``mllm_loss`` scorer's conversation encoder, built for a model loaded outside the scorer.

Training (labels) and evaluation (option log-likelihoods) must count exactly the tokens the scorer counts, so
they use its :class:`~workers.scorers.lm.ConversationEncoder` with the arguments ``MllmLossScorer._load`` gives
it. They cannot take the scorer's own instance: the scorer keeps its model in the per-process model cache,
and training mutates its model. tests/workers/test_training.py checks that this factory and the scorer encode
every test sample to the same tokens and counted positions.
"""

from __future__ import annotations

from typing import Any

from workers.scorers.base import IMAGE_TOKEN
from workers.scorers.lm import ConversationEncoder, Encoded, model_max_length

__all__ = ["IGNORE_INDEX", "labels_of", "mllm_encoder", "n_image_tokens"]

IGNORE_INDEX = -100  # transformers' cross-entropy skips this label


def n_image_tokens(model: Any, processor: Any) -> int:
    """Tokens one image expands to (as the scorer computes it); ValueError when it depends on the image size."""
    counts = set()
    if hasattr(processor, "_get_num_multimodal_tokens"):
        for size in ((336, 336), (200, 700)):
            counts.add(int(processor._get_num_multimodal_tokens(image_sizes=[size]).num_image_tokens[0]))
    else:
        counts.add(int(model.config.image_seq_length))
    if len(counts) != 1:
        raise ValueError("model: image token count depends on image size (anyres): unsupported")
    return counts.pop()


def mllm_encoder(
    model: Any, processor: Any, *, template: str, include_eos: bool, max_length: int | None
) -> ConversationEncoder:
    """The encoder ``MllmLossScorer`` builds for (model, processor) with these parameters."""
    tokenizer = processor.tokenizer
    image_token = getattr(processor, "image_token", IMAGE_TOKEN)
    return ConversationEncoder(
        tokenizer,
        template=template,
        include_eos=include_eos,
        max_length=max_length or model_max_length(model, tokenizer),
        template_owner=processor,
        structured=True,
        image_token_id=tokenizer.convert_tokens_to_ids(image_token),
        n_image_tokens=n_image_tokens(model, processor),
    )


def labels_of(seq: Encoded) -> list[int]:
    """Training labels of an encoded sample: the token at each counted position, :data:`IGNORE_INDEX` elsewhere.

    transformers shifts labels inside its loss (the token at ``p`` is predicted from position ``p - 1``), the same
    pairing as the scorer's ``answer_logprobs``.
    """
    labels = [IGNORE_INDEX] * len(seq.ids)
    for p in seq.targets:
        labels[p] = seq.ids[p]
    return labels
