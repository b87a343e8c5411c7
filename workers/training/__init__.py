"""Fine-tuning a LLaVA-style model on a selection or a curriculum (transformers Trainer, peft LoRA).

Entry points: :func:`train` (a resumable job: stages in order, checkpoints, progress, cancel),
:func:`check_base_model` (a cheap look at a base model before a job) and :func:`reinit_projector` (a base model
whose projector must be learnt again). See :mod:`workers.training.job`
for the job folder's layout.
"""

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

from workers.training.job import JobMismatchError, StageResult, TrainResult, train  # noqa: E402
from workers.training.model import check_base_model, reinit_projector, weights_hash  # noqa: E402
from workers.training.trainer import Progress  # noqa: E402

__all__ = [
    "JobMismatchError",
    "Progress",
    "StageResult",
    "TrainResult",
    "check_base_model",
    "reinit_projector",
    "train",
    "weights_hash",
]
