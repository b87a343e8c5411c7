"""Training parameters: presets hold the documented recipes, overrides apply, errors name the field, the key
is stable across spellings and blind to runtime knobs, the planned step count."""

from __future__ import annotations

from typing import Any

import pytest

from backend.train_specs import (
    PRESETS,
    TrainParamsError,
    planned_steps,
    resolve_train_params,
    runtime_train_fields,
    train_params_key,
)


def test_paper_lora_is_llava_15s_lora_recipe() -> None:
    p = resolve_train_params({"preset": "paper_lora"})
    assert (p.method, p.lora_r, p.lora_alpha, p.lora_dropout, p.lora_target_modules) == ("lora", 128, 256, 0.05, None)
    assert (p.lr, p.projector_lr, p.epochs, p.scheduler, p.warmup_ratio, p.weight_decay) == (
        2e-4, 2e-5, 1, "cosine", 0.03, 0.0)
    assert p.batch_size * p.grad_accum == 128 and p.max_length == 2048 and p.freeze_vision


def test_quick_is_the_measured_tiny_model_setting() -> None:
    p = resolve_train_params({"preset": "quick"})
    assert (p.method, p.epochs, p.batch_size, p.lr, p.projector_lr, p.freeze_vision) == (
        "full", 3, 16, 1e-3, 1e-2, True)
    assert resolve_train_params(None) == resolve_train_params({}) == p  # quick is the default


def test_overrides_apply_after_the_preset() -> None:
    p = resolve_train_params({"preset": "paper_lora", "lr": 1e-4, "lora_r": 8, "lora_target_modules": ["q_proj"],
                              "max_steps": 10})
    assert (p.lr, p.lora_r, p.lora_target_modules, p.max_steps, p.projector_lr) == (1e-4, 8, ("q_proj",), 10, 2e-5)
    assert resolve_train_params(p) is p


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"preset": "huge"}, "preset"),
        ({"learning_rate": 1e-3}, "learning_rate"),
        ({"lr": 0}, "lr"),
        ({"lr": "fast"}, "lr"),
        ({"projector_lr": -1}, "projector_lr"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"scheduler": "exp"}, "scheduler"),
        ({"precision": "fp16"}, "precision"),
        ({"max_length": 4}, "max_length"),
        ({"max_steps": 0}, "max_steps"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"method": "qlora"}, "method"),
        ({"preset": "quick", "lora_r": 8}, "lora_r"),  # LoRA fields mean nothing to full fine-tuning
        ({"preset": "paper_lora", "method": "full", "lora_alpha": 2}, "lora_alpha"),
        ({"preset": "paper_lora", "freeze_vision": False}, "freeze_vision"),
        ({"preset": "paper_lora", "lora_dropout": 1}, "lora_dropout"),
    ],
)
def test_errors_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(TrainParamsError) as e:
        resolve_train_params(raw)
    assert e.value.field == field
    assert str(e.value).startswith(f"train.{field}: ")
    assert isinstance(e.value, ValueError)


def test_not_an_object() -> None:
    with pytest.raises(TrainParamsError, match=r"train\.params: expected an object"):
        resolve_train_params([1])  # type: ignore[arg-type]


def test_key_is_stable_and_ignores_runtime_knobs_and_names() -> None:
    quick = train_params_key({"preset": "quick"})
    assert len(quick) == 64 and quick == train_params_key(None)
    assert train_params_key({"preset": "quick", "checkpoint_every": 7, "num_workers": 3}) == quick
    assert train_params_key({"preset": "quick", "lr": 1e-3, "epochs": 3}) == quick  # the preset's own values
    assert train_params_key({"preset": "quick", "lr": 2e-3}) != quick
    # the same setting reached from the other preset
    spelled = {k: v for k, v in PRESETS["quick"].items() if k not in runtime_train_fields()}
    assert train_params_key({"preset": "paper_lora", **spelled}) == quick
    # projector_lr None means "= lr"
    same_lr = train_params_key({"preset": "quick", "projector_lr": None, "lr": 1e-3})
    assert same_lr == train_params_key({"preset": "quick", "projector_lr": 1e-3})
    # LoRA fields are part of a LoRA key only
    assert train_params_key({"preset": "paper_lora", "lora_r": 64}) != train_params_key({"preset": "paper_lora"})
    assert {"checkpoint_every", "num_workers", "gradient_checkpointing"} == runtime_train_fields()


@pytest.mark.parametrize(
    ("n", "overrides", "steps"),
    [
        (300, {}, 19 * 3),  # quick: ceil(300 / 16) = 19 batches, 3 epochs
        (16, {}, 3),
        (17, {"epochs": 1}, 2),
        (300, {"grad_accum": 4}, 5 * 3),  # 19 batches -> 4 full accumulations + 1 partial
        (300, {"max_steps": 10}, 10),
        (300, {"max_steps": 1000}, 57),  # a cap, not a target
        (0, {}, 0),
    ],
)
def test_planned_steps(n: int, overrides: dict[str, Any], steps: int) -> None:
    assert planned_steps(n, resolve_train_params(overrides)) == steps
