"""Step 1 of the demo: the synthetic SVIT-like dataset's files (images, four task types, labelled defects)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from backend.settings import Settings
from qspace.demo.messages import Echo, say
from qspace.synthetic import make_svit_like, svit_task_files


def ensure_dataset_files(settings: Settings, size: int, seed: int, echo: Echo = say) -> Path:
    """The synthetic dataset's folder under the data directory, written first if missing (atomically)."""
    folder = settings.data_dir / "demo" / f"svit-n{size}-seed{seed}"
    if all(p.is_file() for p in svit_task_files(folder)) and (folder / "task_type_prompts.json").is_file():
        return folder
    echo(f"demo: writing a synthetic SVIT-like dataset of {size:,} samples (images, four task types, defects)")
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        make_svit_like(tmp, n=size, seed=seed)
        if folder.exists():  # an incomplete earlier attempt
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
