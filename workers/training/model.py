"""The model side of training: load through the scorer's path, LoRA or full fine-tuning, save, hash, reinitialise.

- :func:`load_for_training` loads with :func:`workers.scorers.lm.load_mllm` (what ``mllm_loss`` loads with), never
  through the scorers' model cache: training changes the weights.
- :func:`prepare_model`: ``lora`` wraps the model in peft LoRA on every linear layer of the language model (or
  those named), the multimodal projector trained fully beside it (peft ``modules_to_save``; LLaVA saves it as
  ``non_lora_trainables``), everything else frozen; ``full`` trains all but the vision tower when it is frozen.
- :func:`save_trained` writes a stage's result as a plain checkpoint ``load_mllm`` (and so the scorers and the
  evaluation) loads: a LoRA run is merged into its base; its adapter is kept beside it for export.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from backend.scorer_specs import model_identity
from backend.train_specs import TrainParams
from workers.scorers.lm import load_mllm

__all__ = [
    "PROJECTOR",
    "check_base_model",
    "load_for_training",
    "lora_target_names",
    "prepare_model",
    "reinit_projector",
    "resolve_precision",
    "save_trained",
    "weights_hash",
]

PROJECTOR = "multi_modal_projector"


def resolve_precision(precision: str, device: torch.device) -> str:
    """'fp32' or 'bf16': 'auto' is bf16 on a CUDA device that supports it."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def load_dtype(params: TrainParams, precision: str) -> torch.dtype:
    """The dtype the weights are loaded in. LoRA in bf16 keeps its frozen base in bf16 (the trained parameters
    are upcast to float32); full fine-tuning keeps float32 master weights under bf16 autocast."""
    return torch.bfloat16 if precision == "bf16" and params.method == "lora" else torch.float32


def load_for_training(source: str | Path, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """(model, processor) as the ``mllm_loss`` scorer loads them, a fresh copy outside the model cache."""
    model, processor = load_mllm(str(source), device, dtype)
    if not hasattr(model, "model") or not hasattr(model.model, PROJECTOR):
        raise ValueError(f"base_model: {source} is not a LLaVA-style model (no {PROJECTOR})")
    return model, processor


def check_base_model(source: str | Path) -> dict[str, Any]:
    """Whether ``source`` is a model the engine can train and evaluate, from its config and processor alone
    (no weights read): ``{"model_type", "image_tokens", "identity"}``, or ValueError("base_model: why")."""
    from transformers import AutoConfig, AutoProcessor

    from workers.training.encoding import n_image_tokens

    name = str(source)
    try:
        config = AutoConfig.from_pretrained(name)
        processor = AutoProcessor.from_pretrained(name)
    except Exception as e:  # a missing folder, an unknown hub name, a broken config: all the same to the caller
        raise ValueError(f"base_model: {name} does not load ({type(e).__name__}: {str(e)[:200]})") from None
    if getattr(config, "vision_config", None) is None or getattr(config, "text_config", None) is None:
        raise ValueError(f"base_model: {name} is not an image-text model (model type {config.model_type!r})")
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise ValueError(f"base_model: {name} has no image processor and tokenizer")
    tokens = n_image_tokens(SimpleNamespace(config=config), processor)
    return {"model_type": config.model_type, "image_tokens": tokens, "identity": model_identity(name)}


def lora_target_names(model: Any, wanted: tuple[str, ...] | None) -> list[str]:
    """Full names of the language model's linear layers that get LoRA: all of them (LLaVA's
    ``find_all_linear_names``: never the vision tower, projector or output head), or those whose last name
    part is in ``wanted``."""
    lm = model.model.language_model
    prefix = "model.language_model."
    names = [
        prefix + name
        for name, module in lm.named_modules()
        if isinstance(module, torch.nn.Linear) and (wanted is None or name.rsplit(".", 1)[-1] in wanted)
    ]
    if not names:
        raise ValueError(f"train.lora_target_modules: no linear layer of the language model is named {wanted}")
    return names


def prepare_model(model: Any, params: TrainParams, seed: int, precision: str) -> Any:
    """The model to hand the Trainer: peft LoRA or the model itself, with the right parameters trainable."""
    model.train()
    if params.method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=params.lora_r,
            lora_alpha=params.lora_alpha,  # type: ignore[arg-type]  # a float works: scale = alpha / r
            lora_dropout=params.lora_dropout,
            target_modules=lora_target_names(model, params.lora_target_modules),
            modules_to_save=[PROJECTOR],
            bias="none",
        )
        torch.manual_seed(seed)  # LoRA's A matrices are random
        with warnings.catch_warnings():
            # peft 0.21 reads the attribute transformers 5 renamed (is_activation_checkpointing): harmless
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            model = get_peft_model(model, config)
        if precision == "bf16":
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.float()  # optimizer state and updates in float32
    else:
        model.requires_grad_(True)
        if params.freeze_vision:
            model.model.vision_tower.requires_grad_(False)
    return model


def weights_hash(model: Any) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a model's state dict (sorted by name)."""
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def _replace_dir(tmp: Path, dst: Path) -> None:
    """Move a finished ``tmp`` folder to ``dst``, replacing what is there."""
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def save_trained(
    model: Any, processor: Any, params: TrainParams, dtype: torch.dtype, model_dir: Path, adapter_dir: Path | None
) -> tuple[Any, str]:
    """Write the trained model to ``model_dir`` (merged when LoRA; its adapter to ``adapter_dir``).

    Returns (the plain model that was saved, its :func:`weights_hash`). Each folder is written under a
    temporary name and renamed when complete.
    """
    if params.method == "lora":
        if adapter_dir is not None:
            tmp = adapter_dir.with_name(adapter_dir.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)  # LoRA weights and the fully trained projector
            _replace_dir(tmp, adapter_dir)
        model = model.merge_and_unload()
    model = model.to(dtype).eval()
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    _replace_dir(tmp, model_dir)
    return model, weights_hash(model)


def _checkpoint_dtype(source: str | Path) -> torch.dtype:
    from transformers import AutoConfig

    value = getattr(AutoConfig.from_pretrained(str(source)), "dtype", None)
    if isinstance(value, torch.dtype):
        return value
    found = getattr(torch, str(value).removeprefix("torch."), None) if value else None
    return found if isinstance(found, torch.dtype) else torch.float32


def reinit_projector(src_dir: str | Path, dst_dir: str | Path, seed: int = 0) -> Path:
    """Write a copy of the LLaVA checkpoint ``src_dir`` to ``dst_dir`` with its multimodal projector
    re-initialised (PyTorch's default Linear init, from ``seed``); language model, vision tower and
    processor kept. Issue 15 measured this as the base that gives the closed loop power on the demo: the
    model reads language as before but must learn again to use the image.

    Deterministic for (source, seed); ``dst_dir`` is replaced when it exists; returns it.
    """
    dst = Path(dst_dir)
    dtype = _checkpoint_dtype(src_dir)
    model, processor = load_for_training(src_dir, torch.device("cpu"), dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in getattr(model.model, PROJECTOR).modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    note = {"source": str(Path(src_dir).resolve()), "source_identity": model_identity(str(src_dir)), "seed": seed,
            "reinitialised": PROJECTOR}
    (tmp / "qspace_reinit.json").write_text(json.dumps(note, indent=1) + "\n")
    _replace_dir(tmp, dst)
    return dst
