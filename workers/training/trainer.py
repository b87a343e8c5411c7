"""transformers' Trainer, set up for one stage of a job: projector learning rate, progress, cancel, checkpoints."""

from __future__ import annotations

import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from backend.train_specs import TrainParams
from workers.training.model import PROJECTOR

RATE_WINDOW = 20  # samples/s and ETA from the last this many optimizer steps

__all__ = ["JobCallback", "LlavaTrainer", "Progress", "StepRate", "last_checkpoint", "make_trainer", "stage_arguments"]


@dataclass(frozen=True)
class Progress:
    """Where a job stands, for the caller's progress hook (``step`` and ``total_steps`` count the whole job)."""

    stage: int  # 0-based
    n_stages: int
    step: int
    total_steps: int
    loss: float | None  # the last optimizer step's training loss (mean nats per answer token)
    samples_per_s: float
    eta_s: float | None


class LlavaTrainer(Trainer):
    """A Trainer whose optimizer gives the multimodal projector its own learning rate (LLaVA's
    ``mm_projector_lr``), with weight decay on the usual parameters only (not biases and norms)."""

    def __init__(self, *args: Any, projector_lr: float, **kwargs: Any) -> None:
        self.projector_lr = projector_lr
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model: Any = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
            for name, p in opt_model.named_parameters():
                if p.requires_grad:
                    groups.setdefault((PROJECTOR in name, name in decay), []).append(p)
            param_groups = [
                {
                    "params": ps,
                    "weight_decay": self.args.weight_decay if is_decay else 0.0,
                    "lr": self.projector_lr if is_projector else self.args.learning_rate,
                }
                for (is_projector, is_decay), ps in sorted(groups.items())
            ]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        """Checkpoints of a plain model keep its own parameter names. ``save_pretrained`` writes the hub's names
        (e.g. ``language_model.model.layers...`` for LLaVA) while ``_load_from_checkpoint`` loads the file as it
        is: a resumed run would silently keep its starting weights (transformers issues #43701, #48805)."""
        if isinstance(self.model, PreTrainedModel):
            folder = str(output_dir if output_dir is not None else self.args.output_dir)
            os.makedirs(folder, exist_ok=True)
            self.model.save_pretrained(folder, state_dict=state_dict, save_original_format=False)
            return
        super()._save(output_dir, state_dict)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """A resume that does not restore every weight is an error, not a log line."""
        assert self.model is not None
        state = self.model.state_dict()
        loaded_ptrs = {state[k].data_ptr() for k in state if k not in set(load_result.missing_keys)}
        # a tied weight left out of the file is restored by the weight it shares storage with
        missing = [k for k in load_result.missing_keys if k in state and state[k].data_ptr() not in loaded_ptrs]
        if missing or load_result.unexpected_keys:
            raise RuntimeError(
                f"checkpoint does not match the model: missing {missing[:5]}, unexpected "
                f"{list(load_result.unexpected_keys)[:5]}"
            )


class StepRate:
    """Optimizer steps per second over the last :data:`RATE_WINDOW` steps of a job, across its stages.

    The first step of each Trainer run also pays for set-up (optimizer, first allocations) and the gap before it
    for loading the stage's model, so it is left out.
    """

    def __init__(self) -> None:
        self._intervals: deque[float] = deque(maxlen=RATE_WINDOW)
        self._last: float | None = None

    def start_run(self) -> None:
        self._last = None

    def step(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self._intervals.append(now - self._last)
        self._last = now

    @property
    def per_s(self) -> float | None:
        total = sum(self._intervals)
        return len(self._intervals) / total if total > 0 else None


class JobCallback(TrainerCallback):
    """Reports progress after every optimizer step and turns ``should_stop()`` into a checkpoint and a stop."""

    def __init__(
        self,
        *,
        stage: int,
        n_stages: int,
        steps_before: int,
        total_steps: int,
        samples_per_step: int,
        on_progress: Callable[[Progress], None] | None,
        should_stop: Callable[[], bool] | None,
        rate: StepRate | None = None,
    ) -> None:
        self.stage, self.n_stages = stage, n_stages
        self.steps_before, self.total_steps = steps_before, total_steps
        self.samples_per_step = samples_per_step
        self.on_progress, self.should_stop = on_progress, should_stop
        self.rate = rate if rate is not None else StepRate()
        self.stopped = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.rate.start_run()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.rate.step()
        if self.should_stop is not None and self.should_stop():
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True  # a cancelled job resumes from exactly here

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Keep only the checkpoint just written (complete: the Trainer calls this after writing its state)."""
        newest = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        for p in Path(args.output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            if p.name != newest and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
        if self.on_progress is None or not logs or "loss" not in logs:
            return
        step = self.steps_before + state.global_step
        per_s = self.rate.per_s
        self.on_progress(
            Progress(
                stage=self.stage,
                n_stages=self.n_stages,
                step=step,
                total_steps=self.total_steps,
                loss=float(logs["loss"]),
                samples_per_s=per_s * self.samples_per_step if per_s else 0.0,
                eta_s=(self.total_steps - step) / per_s if per_s else None,
            )
        )


def last_checkpoint(stage_dir: Path) -> Path | None:
    """The newest complete checkpoint of a stage (the Trainer writes ``trainer_state.json`` last, so a
    checkpoint without it was cut short by a kill)."""
    found = []
    for p in stage_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        suffix = p.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
        if suffix.isdigit() and (p / TRAINER_STATE_NAME).is_file():
            found.append((int(suffix), p))
    return max(found)[1] if found else None


def stage_arguments(
    params: TrainParams, stage_dir: Path, *, seed: int, max_steps: int, precision: str, device: torch.device
) -> TrainingArguments:
    """The Trainer's arguments for one stage: one log entry per optimizer step, a checkpoint every
    ``checkpoint_every`` steps, nothing printed, nothing reported."""
    return TrainingArguments(
        output_dir=str(stage_dir),
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.grad_accum,
        num_train_epochs=params.epochs,
        max_steps=max_steps,
        learning_rate=params.lr,
        lr_scheduler_type=params.scheduler,
        warmup_steps=float(params.warmup_ratio),  # a float in [0, 1) is a share of the steps
        weight_decay=params.weight_decay,
        max_grad_norm=1.0,
        activation_checkpointing=params.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if params.gradient_checkpointing else None,
        bf16=precision == "bf16",
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="steps",
        save_steps=params.checkpoint_every,
        save_total_limit=None,  # JobCallback.on_save keeps the newest (the Trainer's rotation logs about mtimes)
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device.type == "cpu",
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=params.num_workers,
        dataloader_pin_memory=device.type == "cuda",
    )


def make_trainer(
    model: Any, args: TrainingArguments, dataset: Any, collator: Any, projector_lr: float, callback: JobCallback
) -> LlavaTrainer:
    trainer = LlavaTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[callback],
        projector_lr=projector_lr,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log entry to stdout
    return trainer
