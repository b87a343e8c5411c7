"""A training job: a base model fine-tuned on one or more stages of samples, resumable after a kill.

:func:`train` is the entry point. Stage ``k + 1`` starts from stage ``k``'s final weights (the curriculum of the
paper; one stage for a plain selection); each stage is one Trainer run with its own warm-up and schedule.

Job directory (``out_dir``)::

    job.json                  what the job is (base model identity, parameters, seed, each stage's data hash);
                              a second call with other inputs on the same folder is refused
    stage-K/checkpoint-N/     the Trainer's newest checkpoint of stage K (weights, optimizer, scheduler, RNG)
    stage-K/model/            stage K's final weights, a plain checkpoint ``load_mllm`` loads (LoRA merged)
    stage-K/adapter/          LoRA only: the adapter (and projector) trained in stage K, on stage K's base
    stage-K/done.json         stage K finished: its :class:`StageResult` (written last; checkpoints then deleted)
    result.json               the job finished: its :class:`TrainResult`

Calling :func:`train` again on the same folder returns the stored result when the job finished, and otherwise
skips finished stages and resumes the current one from its newest complete checkpoint: a worker killed
mid-job loses at most ``checkpoint_every`` steps, and the resumed run reaches the same weights as an
uninterrupted one (the Trainer restores optimizer, schedule, RNG and data order).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import torch

from backend.scorer_specs import ScoreItem, model_identity
from backend.train_specs import (
    TrainParams,
    canonical_train_params,
    planned_steps,
    resolve_train_params,
    train_params_key,
)
from workers.scorers.base import resolve_device
from workers.training.data import Collator, Examples, TrainExample, encode_items
from workers.training.encoding import mllm_encoder
from workers.training.model import (
    check_base_model,
    load_dtype,
    load_for_training,
    prepare_model,
    resolve_precision,
    save_trained,
    weights_hash,
)
from workers.training.trainer import JobCallback, Progress, StepRate, last_checkpoint, make_trainer, stage_arguments

__all__ = ["JobMismatchError", "StageResult", "TrainResult", "encode_for_training", "train"]

JOB_VERSION = 1


class JobMismatchError(ValueError):
    """``out_dir`` holds another job (other base model, parameters, seed or data)."""


@dataclass
class StageResult:
    index: int
    n_samples: int  # trained on (the stage's samples less the skipped ones)
    steps: int
    train_loss: float | None  # mean over the stage's optimizer steps of their training loss
    losses: list[float]  # per optimizer step
    start_hash: str  # weights the stage started from
    end_hash: str  # weights it ended with (those saved in model_dir)
    model_dir: str
    adapter_dir: str | None
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (sample_id, reason)
    seconds: float = 0.0  # of the run that finished the stage

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageResult:
        return cls(**{**data, "skipped": [tuple(x) for x in data["skipped"]]})


@dataclass
class TrainResult:
    status: Literal["done", "cancelled"]
    out_dir: str
    base_model: str
    base_identity: str | None
    params: dict[str, Any]  # canonical values (what the key hashes)
    params_key: str
    seed: int
    stages: list[StageResult]
    model_dir: str | None  # the final model (last stage's), None when cancelled
    adapter_dir: str | None
    steps: int  # optimizer steps of the finished stages
    train_loss: float | None  # the last finished stage's
    seconds: float  # this call's wall time

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        return cls(**{**data, "stages": [StageResult.from_json(s) for s in data["stages"]]})


# --- the job folder ---------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _drop_checkpoints(stage_dir: Path) -> None:
    for ckpt in stage_dir.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True)


def _data_hash(items: Sequence[ScoreItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.sample_id, it.images, it.conversations], sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def _job_identity(
    base_model: str, params: TrainParams, seed: int, stages: Sequence[Sequence[ScoreItem]]
) -> dict[str, Any]:
    return {
        "version": JOB_VERSION,
        "base_model": base_model,
        "base_identity": model_identity(base_model),
        "params": canonical_train_params(params),
        "params_key": train_params_key(params),
        "seed": seed,
        "stages": [{"n": len(s), "data": _data_hash(s)} for s in stages],
    }


def _claim(out: Path, identity: dict[str, Any]) -> None:
    """Write ``job.json``, or check that the folder's job is this one."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "job.json"
    if path.exists():
        found = json.loads(path.read_text())
        if found != identity:
            diff = sorted(k for k in identity if found.get(k) != identity[k])
            raise JobMismatchError(f"out_dir: {out} holds another job (differs in {', '.join(diff)})")
        return
    _write_json(path, identity)


# --- the job -----------------------------------------------------------------------------------------


def encode_for_training(
    base_model: str, params: TrainParams, stages: Sequence[Sequence[ScoreItem]]
) -> list[tuple[list[TrainExample], list[tuple[int, str]]]]:
    """(examples, skipped) per stage, encoded up front with the base's processor (each stage saves the same
    one) and config (no weights loaded), so the job's step count is known before the first step."""
    from transformers import AutoConfig, AutoProcessor

    processor = AutoProcessor.from_pretrained(base_model)
    config_only = SimpleNamespace(config=AutoConfig.from_pretrained(base_model))
    encoder = mllm_encoder(
        config_only, processor, template=params.template, include_eos=params.include_eos, max_length=params.max_length
    )
    return [encode_items(encoder, items) for items in stages]


def _losses(log_history: list[dict[str, Any]]) -> list[float]:
    """One training loss per optimizer step (logging every step; a resumed run's state keeps earlier entries)."""
    by_step = {int(e["step"]): float(e["loss"]) for e in log_history if "loss" in e and "step" in e}
    return [by_step[k] for k in sorted(by_step)]


def _run_stage(
    k: int,
    source: str,
    examples: list[TrainExample],
    skipped: list[tuple[int, str]],
    stage_dir: Path,
    params: TrainParams,
    seed: int,
    device: torch.device,
    callback: JobCallback,
    max_steps: int,
) -> StageResult | None:
    """Train stage ``k`` from ``source`` (resuming from its checkpoint); None when stopped."""
    t0 = time.perf_counter()
    precision = resolve_precision(params.precision, device)
    dtype = load_dtype(params, precision)
    model, processor = load_for_training(source, device, dtype)
    start_hash = weights_hash(model)
    model = prepare_model(model, params, seed, precision)
    pad = processor.tokenizer.pad_token_id
    collator = Collator(processor.image_processor, int(pad if pad is not None else processor.tokenizer.eos_token_id))
    args = stage_arguments(params, stage_dir, seed=seed, max_steps=max_steps, precision=precision, device=device)
    trainer = make_trainer(model, args, Examples(examples), collator, params.projector_lr or params.lr, callback)
    resume = last_checkpoint(stage_dir)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if callback.stopped:
        return None
    losses = _losses(trainer.state.log_history)
    model_dir = stage_dir / "model"
    adapter_dir = stage_dir / "adapter" if params.method == "lora" else None
    _, end_hash = save_trained(trainer.model, processor, params, dtype, model_dir, adapter_dir)
    return StageResult(
        index=k,
        n_samples=len(examples) - len(collator.dropped),
        steps=int(trainer.state.global_step),
        train_loss=sum(losses) / len(losses) if losses else None,
        losses=losses,
        start_hash=start_hash,
        end_hash=end_hash,
        model_dir=str(model_dir),
        adapter_dir=str(adapter_dir) if adapter_dir else None,
        skipped=skipped + sorted(collator.dropped.items()),
        seconds=round(time.perf_counter() - t0, 3),
    )


def train(
    base_model: str | os.PathLike[str],
    stages: Sequence[Sequence[ScoreItem]],
    out_dir: str | os.PathLike[str],
    *,
    params: TrainParams | dict[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune ``base_model`` on ``stages`` in order (one stage = a plain selection) into ``out_dir``.

    ``params``: a :class:`TrainParams` or ``{"preset": ..., **overrides}``. ``on_progress`` gets a
    :class:`Progress` after every optimizer step; ``should_stop`` is asked after every step and, when true,
    the job saves a checkpoint and returns ``status="cancelled"`` (calling again resumes it). Raises
    ValueError for bad parameters, a base model that does not load, an empty stage, a stage left with no
    trainable sample, or an ``out_dir`` holding another job (:class:`JobMismatchError`).
    """
    t_start = time.perf_counter()
    params = resolve_train_params(params)
    base = str(Path(base_model).resolve()) if Path(base_model).exists() else str(base_model)
    if not stages:
        raise ValueError("stages: no stage to train")
    for k, items in enumerate(stages):
        if not items:
            raise ValueError(f"stages[{k}]: empty")
    check_base_model(base)
    out = Path(out_dir)
    identity = _job_identity(base, params, seed, stages)
    _claim(out, identity)
    if (out / "result.json").exists():
        return TrainResult.from_json(json.loads((out / "result.json").read_text()))

    dev = resolve_device(device)
    encoded = encode_for_training(base, params, stages)
    for k, (examples, skipped) in enumerate(encoded):
        if not examples:
            reasons = sorted({r for _, r in skipped})[:3]
            raise ValueError(f"stages[{k}]: no sample can be trained on ({'; '.join(reasons)})")
    plan = [planned_steps(len(ex), params) for ex, _ in encoded]
    samples_per_step = params.batch_size * params.grad_accum
    rate = StepRate()
    results: list[StageResult] = []
    source = base
    for k, (examples, skipped) in enumerate(encoded):
        stage_dir = out / f"stage-{k}"
        done = stage_dir / "done.json"
        if done.exists():
            _drop_checkpoints(stage_dir)  # left behind when a kill came right after done.json
            results.append(StageResult.from_json(json.loads(done.read_text())))
            source = results[-1].model_dir
            continue
        if should_stop is not None and should_stop():
            return _result("cancelled", out, identity, results, t_start)
        callback = JobCallback(
            stage=k,
            n_stages=len(stages),
            steps_before=sum(plan[:k]),
            total_steps=sum(plan),
            samples_per_step=samples_per_step,
            on_progress=on_progress,
            should_stop=should_stop,
            rate=rate,
        )
        stage_dir.mkdir(parents=True, exist_ok=True)
        stage = _run_stage(k, source, examples, skipped, stage_dir, params, seed, dev, callback, plan[k])
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        if stage is None:
            return _result("cancelled", out, identity, results, t_start)
        _write_json(done, asdict(stage))
        _drop_checkpoints(stage_dir)  # the stage is done: its model folder is what counts
        results.append(stage)
        source = stage.model_dir
    result = _result("done", out, identity, results, t_start)
    _write_json(out / "result.json", result.to_json())
    return result


def _result(
    status: Literal["done", "cancelled"], out: Path, identity: dict[str, Any], stages: list[StageResult], t0: float
) -> TrainResult:
    last = stages[-1] if stages and status == "done" else None
    return TrainResult(
        status=status,
        out_dir=str(out),
        base_model=identity["base_model"],
        base_identity=identity["base_identity"],
        params=identity["params"],
        params_key=identity["params_key"],
        seed=identity["seed"],
        stages=stages,
        model_dir=last.model_dir if last else None,
        adapter_dir=last.adapter_dir if last else None,
        steps=sum(s.steps for s in stages),
        train_loss=last.train_loss if last else None,
        seconds=round(time.perf_counter() - t0, 3),
    )
