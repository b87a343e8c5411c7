"""How the demo's models are trained: the recipe (everything besides the seed and the code that decides the
weights) and the conditions of a training run (torch threads, quiet libraries, the learning-rate schedule)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

import torch  # noqa: E402

from workers.tiny_models import IMAGE_TOKEN  # noqa: E402

CODE_VERSION = 2  # bump when a change to the demo models' code changes the trained weights: the cache key holds it
CLIP_NAME = "qspace-demo-clip"
THREADS = 2
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]

Log = Callable[[str], None]
Step = Callable[[], None]  # called after each optimizer step (progress only: it never touches the weights)
Progress = Callable[[int, int], None]  # (steps done, steps in all) of both models' training


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the weights, besides the seed, the corpus and the code of `workers.demo_models`."""

    corpus_size: int = 6000  # clean synthetic samples the caller generates for training
    image_size: int = 64
    patch_size: int = 8
    # CLIP: trains on a fixed random subset of the corpus
    clip_samples: int = 3000
    clip_width: int = 64
    clip_layers: int = 2
    clip_text_width: int = 64
    clip_text_layers: int = 2
    clip_embed_dim: int = 64
    clip_epochs: int = 6
    clip_batch: int = 32
    clip_lr: float = 7e-4
    clip_single_answer_p: float = 0.3  # multi-turn samples: train on one answer instead of all, this often
    # LLaVA: every short-answer sample of the corpus, this share of the long-answer ones
    llava_long_fraction: float = 0.5
    vocab_size: int = 800
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int = 2
    llm_intermediate: int = 256
    llava_epochs: int = 6
    llava_batch: int = 16
    llava_lr: float = 5e-3
    llava_projector_lr_mult: float = 10.0  # a faster projector: the use of the image sets in for every seed
    max_length: int = 1024

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:10]


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` pairs as Recipe fields."""
    types = {f.name: f.type for f in fields(Recipe)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if key not in types:
            raise SystemExit(f"--set {pair}: unknown recipe field (known: {', '.join(types)})")
        default = getattr(Recipe(), key)
        out[key] = type(default)(raw)
    return out


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """open_clip warns that a model built without weights is random, transformers shows bars: both meant."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def lr_schedule(step: int, total: int, warmup: float = 0.06) -> float:
    """Linear warm-up, then cosine decay to 5%."""
    w = max(1, int(total * warmup))
    if step < w:
        return (step + 1) / w
    p = min(1.0, (step - w) / max(1, total - w))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))
