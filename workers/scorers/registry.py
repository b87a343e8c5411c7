"""Kind -> scorer class."""

from __future__ import annotations

from typing import Any

import torch

from backend.scorer_specs import get_spec
from workers.scorers.base import Scorer
from workers.scorers.clip import ClipScorer
from workers.scorers.length import LengthScorer
from workers.scorers.lm import IfdScorer, LmLossScorer
from workers.scorers.mllm import MllmLossScorer

SCORERS: dict[str, type[Scorer]] = {
    cls.kind: cls for cls in (ClipScorer, MllmLossScorer, LmLossScorer, IfdScorer, LengthScorer)
}


def build_scorer(
    kind: str,
    params: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> Scorer:
    """A scorer of ``kind`` (params validated; ValueError naming the bad field). The model loads lazily,
    once per process, on the first ``score``/``load``; device defaults to CUDA when present, dtype to
    bf16 there (fp16 without bf16) and float32 on CPU."""
    get_spec(kind)  # ValueError for an unknown kind
    return SCORERS[kind](params, device=device, dtype=dtype)
