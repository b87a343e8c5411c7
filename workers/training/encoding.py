"""The ``mllm_loss`` scorer's conversation encoder, built for a model loaded outside the scorer.

Training (labels) and evaluation (option log-likelihoods) must count exactly the tokens the scorer counts, so
they build its :class:`~workers.scorers.lm.ConversationEncoder` from the same ``mllm_encoder_kwargs``. They cannot
take the scorer's own instance: the scorer keeps its model in the per-process model cache, and training mutates
its model. tests/workers/test_training.py checks that this factory and the scorer encode
every test sample to the same tokens and counted positions.
"""

from __future__ import annotations

from typing import Any

from workers.scorers.conversation import ConversationEncoder, Encoded
from workers.scorers.lm import model_max_length
from workers.scorers.mllm import mllm_encoder_kwargs, n_image_tokens

__all__ = ["IGNORE_INDEX", "labels_of", "mllm_encoder", "n_image_tokens"]

IGNORE_INDEX = -100  # transformers' cross-entropy skips this label


def mllm_encoder(
    model: Any, processor: Any, *, template: str, include_eos: bool, max_length: int | None
) -> ConversationEncoder:
    """The encoder ``MllmLossScorer`` builds for (model, processor) with these parameters."""
    tokenizer = processor.tokenizer
    return ConversationEncoder(
        tokenizer,
        template=template,
        include_eos=include_eos,
        max_length=max_length or model_max_length(model, tokenizer),
        **mllm_encoder_kwargs(model, processor),
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
