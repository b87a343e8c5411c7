"""The demo models' training corpus: a directory in the layout ``qspace ingest`` reads (see
:mod:`workers.demo_train`), its samples, and how they are shared out between the two models."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.demo_models.recipe import Recipe

SHORT_TYPES = ("conversation", "referring_qa")


@dataclass(frozen=True)
class CorpusSample:
    task_type: str
    image: str  # absolute path
    conversations: list[dict[str, str]]


def load_corpus(folder: Path) -> list[CorpusSample]:
    """The records of a corpus directory (the layout :mod:`workers.demo_train` describes), task types in the
    order ``task_type_prompts.json`` names them."""
    folder = Path(folder)
    task_types = json.loads((folder / "task_type_prompts.json").read_text())
    out = []
    for task in task_types:
        for rec in json.loads((folder / f"{task}.json").read_text()):
            out.append(CorpusSample(task, str(folder / rec["image"]), rec["conversations"]))
    return out


def split_corpus(
    corpus: Sequence[CorpusSample], seed: int, recipe: Recipe
) -> tuple[list[CorpusSample], list[CorpusSample]]:
    """(the CLIP's samples: a random subset; the LLaVA's: all short-answer samples, a share of the long ones)."""
    order = list(range(len(corpus)))
    random.Random(seed + 3).shuffle(order)
    clip_part = [corpus[i] for i in sorted(order[: recipe.clip_samples])]
    long_ids = [i for i in order if corpus[i].task_type not in SHORT_TYPES]
    keep_long = set(long_ids[: round(len(long_ids) * recipe.llava_long_fraction)])
    llava_part = [s for i, s in enumerate(corpus) if s.task_type in SHORT_TYPES or i in keep_long]
    return clip_part, llava_part


def answers_of(sample: CorpusSample) -> list[str]:
    from workers.scorers.base import answers

    return answers(sample.conversations)


def load_rgb(path: str) -> Any:
    from workers.scorers.base import load_image

    return load_image(path)
