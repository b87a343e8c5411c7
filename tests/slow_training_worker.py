"""The qspace worker app with a hook into experiment training, for `celery -A tests.slow_training_worker worker`.

It is the production app (``workers.celery_app``) and tasks; the training call is wrapped so a test can see and
slow down the steps. From the environment of the worker process:

- ``QSPACE_TEST_STEP_DELAY_FILE``: while this file exists, each optimizer step sleeps as many seconds as it holds
  (makes "mid-job" last long enough to kill the worker there);
- ``QSPACE_TEST_LOG_DIR``: each pool process appends the steps it reports to ``steps-<pid>.log``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

# torch, transformers and peft load once, before the pool forks
import workers.evaluation
import workers.experiment_tasks as tasks
import workers.training  # noqa: F401
from workers.celery_app import app

__all__ = ["app"]

torch.set_num_threads(1)  # tiny models on a shared CPU: one thread is faster

DELAY_FILE = Path(os.environ["QSPACE_TEST_STEP_DELAY_FILE"]) if os.environ.get("QSPACE_TEST_STEP_DELAY_FILE") else None
LOG_DIR = Path(os.environ["QSPACE_TEST_LOG_DIR"]) if os.environ.get("QSPACE_TEST_LOG_DIR") else None

_train_model = tasks.train_model


def _observed_train(*args: Any, **kwargs: Any) -> Any:
    inner = kwargs.get("on_progress")

    def on_progress(p: Any) -> None:
        if LOG_DIR is not None:
            with open(LOG_DIR / f"steps-{os.getpid()}.log", "a") as f:
                f.write(f"{p.step}\n")
        if inner is not None:
            inner(p)
        if DELAY_FILE is not None and DELAY_FILE.exists():
            time.sleep(float(DELAY_FILE.read_text().strip() or 1))

    kwargs["on_progress"] = on_progress
    return _train_model(*args, **kwargs)


tasks.train_model = _observed_train
