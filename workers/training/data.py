"""Training examples: samples encoded once (tokens + labels), images decoded per batch by the collator."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from backend.scorer_specs import ScoreItem
from workers.scorers.base import SampleError, load_image
from workers.scorers.lm import ConversationEncoder
from workers.training.encoding import IGNORE_INDEX, labels_of

__all__ = ["Collator", "Examples", "TrainExample", "encode_items"]


@dataclass(frozen=True)
class TrainExample:
    sample_id: int
    input_ids: list[int]  # image tokens expanded to the model's feature count
    labels: list[int]  # IGNORE_INDEX except at the scorer's counted positions
    images: tuple[str, ...]


def encode_items(
    encoder: ConversationEncoder, items: Sequence[ScoreItem]
) -> tuple[list[TrainExample], list[tuple[int, str]]]:
    """(examples, skipped as (sample_id, reason)): the scorer's encoding of each item; an item the scorer would
    refuse (empty answer, too long, a missing image file) is skipped with its reason, as the scorer's error."""
    out: list[TrainExample] = []
    skipped: list[tuple[int, str]] = []
    for item in items:
        missing = next((p for p in item.images if not os.path.isfile(p)), None)
        if missing is not None:
            skipped.append((item.sample_id, f"image missing: {missing}"))
            continue
        try:
            seq = encoder.encode(item, n_images=len(item.images))
        except SampleError as e:
            skipped.append((item.sample_id, str(e)))
            continue
        out.append(TrainExample(item.sample_id, seq.ids, labels_of(seq), tuple(item.images)))
    return out, skipped


class Examples(torch.utils.data.Dataset[TrainExample]):
    """The examples of one stage, as the Trainer's dataset (it shuffles indices; the collator builds tensors)."""

    def __init__(self, examples: Sequence[TrainExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> TrainExample:
        return self.examples[i]


class Collator:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` and the batch's ``pixel_values``.

    A sample whose image turns out unreadable (checked for existence only up front: decoding every image of a
    large selection first would cost minutes) is dropped from its batch and recorded in ``dropped``.
    """

    def __init__(self, image_processor: Any, pad_id: int) -> None:
        self.image_processor = image_processor
        self.pad_id = pad_id
        self.dropped: dict[int, str] = {}  # sample_id -> reason (each epoch drops it again)

    def __call__(self, batch: list[TrainExample]) -> dict[str, torch.Tensor]:
        rows: list[TrainExample] = []
        images: list[Any] = []
        for ex in batch:
            try:
                decoded = [load_image(p) for p in ex.images]
            except SampleError as e:
                self.dropped[ex.sample_id] = str(e)
                continue
            rows.append(ex)
            images += decoded
        if not rows:
            example = next(iter(self.dropped.values()))
            raise RuntimeError(f"every sample of a batch has an unreadable image, e.g. {example}")
        width = max(len(ex.input_ids) for ex in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for r, ex in enumerate(rows):
            n = len(ex.input_ids)
            ids[r, :n] = torch.tensor(ex.input_ids)
            mask[r, :n] = 1
            labels[r, :n] = torch.tensor(ex.labels)
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if images:
            out["pixel_values"] = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return out
