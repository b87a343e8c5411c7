"""Training parameters of an experiment job, their presets and their key. Torch-free: the API imports this module.

A job's training is a **preset** plus **overrides**: ``{"preset": "paper_lora", "lr": 1e-4}``.
:func:`resolve_train_params` applies the preset's values, then the overrides, and validates the result;
errors name the field (``train.lr: ...``).

- ``paper_lora``: LLaVA-1.5's LoRA fine-tuning recipe (``scripts/v1_5/finetune_lora.sh`` in haotian-liu/LLaVA):
  LoRA r 128, alpha 256, dropout 0.05 on every linear layer of the language model, the projector trained fully at
  2e-5, lr 2e-4, 1 epoch, cosine schedule, 3% warm-up, no weight decay, 2,048 tokens, global batch 128 (there:
  4 GPUs x 16 x 2 accumulation steps; here one device: 16 x 8). The vision tower stays frozen.
- ``quick``: what was measured to give the loop power on the demo's tiny model (issue 15): full fine-tuning,
  3 epochs, batch 16, AdamW lr 1e-3, projector lr 1e-2, vision tower frozen.

:func:`train_params_key` hashes the canonical JSON of the values that change the weights (not the preset's name,
not the runtime knobs), as :func:`backend.scorer_specs.scorer_key` does for scorers: two spellings of one setting
share a key. The seed and the data are not parameters; they identify the job beside the key.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "PRESETS",
    "TrainParams",
    "TrainParamsError",
    "canonical_train_params",
    "planned_steps",
    "resolve_train_params",
    "runtime_train_fields",
    "train_params_key",
]

PresetName = Literal["quick", "paper_lora"]

# Fields a LoRA run reads and a full fine-tuning ignores (left out of a full run's key).
LORA_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")


class TrainParamsError(ValueError):
    """Bad training parameters; ``field`` names the first bad one (``str(e)`` reads ``train.FIELD: why``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"train.{field}: {message}")


def _runtime(default: Any, description: str, **kw: Any) -> Any:
    """A runtime knob: changes speed or bookkeeping only, so ``train_params_key`` leaves it out."""
    return Field(default, description=description, json_schema_extra={"runtime": True}, **kw)


class TrainParams(BaseModel):
    """One training setting, every value resolved (see :func:`resolve_train_params`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: PresetName = Field("quick", description="Where the defaults came from (not part of the key).")
    method: Literal["lora", "full"] = Field(
        "full", description="'lora' = peft LoRA on the language model, projector trained fully; 'full' = every "
        "parameter but the vision tower when it is frozen."
    )
    lora_r: int = Field(128, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(256.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch.")
    lora_target_modules: tuple[str, ...] | None = Field(
        None,
        description="Names (last part, e.g. 'q_proj') of the language model's linear layers that get LoRA; "
        "None = all of them (LLaVA's find_all_linear_names: never the vision tower, projector or output head).",
    )
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW).")
    projector_lr: float | None = Field(
        None, gt=0, description="Peak learning rate of the multimodal projector; None = lr."
    )
    epochs: int = Field(3, ge=1, description="Passes over each stage's samples.")
    batch_size: int = Field(16, ge=1, description="Samples per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of a stage's steps with a linear warm-up.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after the warm-up (per stage)."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not on biases and norms).")
    max_length: int | None = Field(
        None, ge=8, description="Longest sequence in tokens (image tokens included); None = the model's limit."
    )
    freeze_vision: bool = Field(True, description="Keep the vision tower's weights fixed (LLaVA does).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="'auto' = bf16 on a GPU that has it, else fp32."
    )
    template: Literal["auto", "llava_v1"] = Field(
        "auto", description="Prompt format, as the mllm_loss scorer's (one encoder for scores and labels)."
    )
    include_eos: bool = Field(True, description="Also learn the token that ends each answer, as LLaVA does.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop each stage after this many optimizer steps (None = its epochs)."
    )
    checkpoint_every: int = _runtime(50, "Save a resumable checkpoint every this many optimizer steps.", ge=1)
    gradient_checkpointing: bool = _runtime(False, "Recompute activations in the backward pass (less memory).")
    num_workers: int = _runtime(0, "Data-loading processes (0 = in the training process).", ge=0)

    @model_validator(mode="after")
    def _coherent(self) -> TrainParams:
        if self.method == "lora" and not self.freeze_vision:
            raise ValueError("freeze_vision: LoRA keeps the vision tower frozen (LLaVA's recipe); use method 'full'")
        return self


_COMMON: dict[str, Any] = {"freeze_vision": True, "template": "auto", "include_eos": True}

PRESETS: dict[str, dict[str, Any]] = {
    "paper_lora": {
        **_COMMON,
        "method": "lora",
        "lora_r": 128,
        "lora_alpha": 256.0,
        "lora_dropout": 0.05,
        "lora_target_modules": None,
        "lr": 2e-4,
        "projector_lr": 2e-5,
        "epochs": 1,
        "batch_size": 16,
        "grad_accum": 8,
        "warmup_ratio": 0.03,
        "scheduler": "cosine",
        "weight_decay": 0.0,
        "max_length": 2048,
        "precision": "auto",
        "checkpoint_every": 500,
        "gradient_checkpointing": True,
    },
    "quick": {
        **_COMMON,
        "method": "full",
        "lr": 1e-3,
        "projector_lr": 1e-2,
        "epochs": 3,
        "batch_size": 16,
        "grad_accum": 1,
        "warmup_ratio": 0.03,
        "scheduler": "cosine",
        "weight_decay": 0.0,
        "max_length": None,
        "precision": "auto",
        "checkpoint_every": 50,
        "gradient_checkpointing": False,
    },
}


def _first_error(e: ValidationError) -> TrainParamsError:
    first = e.errors()[0]
    field = ".".join(str(x) for x in first["loc"]) or "params"
    msg = str(first["msg"]).removeprefix("Value error, ")
    if field == "params" and ":" in msg:  # a model validator: its message starts with the field it blames
        field, _, msg = msg.partition(":")
    return TrainParamsError(field, msg.strip())


def resolve_train_params(raw: dict[str, Any] | TrainParams | None = None) -> TrainParams:
    """``{"preset": NAME, **overrides}`` -> :class:`TrainParams`: the preset's values, then the overrides.

    Raises :class:`TrainParamsError` (a ValueError) naming the first bad field: an unknown preset or field,
    a value out of range, a LoRA field overridden for method 'full'.
    """
    if isinstance(raw, TrainParams):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TrainParamsError("params", f"expected an object, got {type(raw).__name__}")
    preset = raw.get("preset", "quick")
    if preset not in PRESETS:
        raise TrainParamsError("preset", f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    overrides = {k: v for k, v in raw.items() if k != "preset"}
    unknown = sorted(set(overrides) - set(TrainParams.model_fields))
    if unknown:
        raise TrainParamsError(unknown[0], "unknown field")
    values = {**PRESETS[preset], **overrides, "preset": preset}
    if values.get("method") == "full":
        given = [k for k in LORA_FIELDS if k in overrides]
        if given:
            raise TrainParamsError(given[0], "only applies to method 'lora'")
    try:
        return TrainParams.model_validate(values)
    except ValidationError as e:
        raise _first_error(e) from None


def runtime_train_fields() -> frozenset[str]:
    """Fields that change speed or bookkeeping only (kept out of the key)."""
    return frozenset(
        name
        for name, f in TrainParams.model_fields.items()
        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("runtime")
    )


def canonical_train_params(params: TrainParams) -> dict[str, Any]:
    """The values that decide the weights, as JSON: no preset name, no runtime knobs, no LoRA fields
    for full fine-tuning, ``projector_lr`` spelled out."""
    out = params.model_dump(mode="json")
    for name in ("preset", *runtime_train_fields()):
        out.pop(name)
    if params.method == "full":
        for name in LORA_FIELDS:
            out.pop(name)
    if out["projector_lr"] is None:
        out["projector_lr"] = out["lr"]
    return out


def train_params_key(params: dict[str, Any] | TrainParams | None) -> str:
    """sha256 hex of the canonical JSON of a training setting (see :func:`canonical_train_params`)."""
    canonical = canonical_train_params(resolve_train_params(params))
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def planned_steps(n_samples: int, params: TrainParams) -> int:
    """Optimizer steps one stage of ``n_samples`` takes (transformers' Trainer count: the last, shorter
    batch of an epoch is kept, and a last partial accumulation still steps)."""
    if n_samples <= 0:
        return 0
    batches = math.ceil(n_samples / params.batch_size)
    per_epoch = max(1, math.ceil(batches / params.grad_accum))
    total = per_epoch * params.epochs
    return min(total, params.max_steps) if params.max_steps is not None else total
