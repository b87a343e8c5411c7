"""Step 2 of the demo: its tiny CLIP and LLaVA, from the cache under ``data_dir/models`` or trained here.

The trainer (:mod:`workers.demo_train`) knows nothing of the synthetic generator: this module writes its training
corpus, a separate synthetic dataset (the same generator, a seed no demo dataset uses, no defects), and hands it
the folder. torch loads only when models are looked up (``workers.demo_train`` imports it), never with the demo's
other steps.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from backend.settings import Settings
from qspace.demo.messages import DemoError, Echo, say
from qspace.synthetic import make_svit_like

if TYPE_CHECKING:
    from workers.demo_models.recipe import Progress
    from workers.demo_train import DemoModels, Recipe

CORPUS_SEED_OFFSET = 7_919_000  # the training corpus: same generator, a seed no demo dataset uses


@dataclass(frozen=True)
class ModelPaths:
    clip: Path
    llava: Path


@contextmanager
def training_corpus(models_root: Path, seed: int, size: int, echo: Echo = say) -> Iterator[Path]:
    """A freshly written training corpus for `seed` (clean samples, the layout the trainer reads), removed after."""
    folder = Path(models_root) / f".corpus-seed{seed}-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    echo(f"demo models: rendering a training corpus of {size:,} clean samples (seed {seed})")
    try:
        make_svit_like(folder, n=size, seed=seed + CORPUS_SEED_OFFSET, defect_rate=0.0)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def train_models(
    models_root: Path,
    seed: int,
    recipe: Recipe | None = None,
    echo: Echo = say,
    progress: Progress | None = None,
) -> DemoModels:
    """The trained models of (seed, recipe): from the cache, or trained now on a corpus written for them
    (`progress` hears the training's (steps done, steps in all))."""
    from workers.demo_train import Recipe, cached_models, ensure_demo_models

    recipe = recipe or Recipe()
    found = cached_models(models_root, seed, recipe)
    if found is not None:
        return found
    Path(models_root).mkdir(parents=True, exist_ok=True)
    with training_corpus(models_root, seed, recipe.corpus_size, echo) as corpus:
        return ensure_demo_models(models_root, corpus, seed, recipe, log=echo, progress=progress)


def models_root(settings: Settings) -> Path:
    """Where the demo keeps its trained models (one cache folder per seed, recipe and code version)."""
    return settings.data_dir / "models"


def cached_model_paths(settings: Settings, seed: int) -> ModelPaths | None:
    """The demo's trained CLIP and LLaVA if the cache holds them (nothing is trained); loads torch."""
    try:
        from workers.demo_train import cached_models
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DemoError(
            f"the demo trains its models with torch, open_clip and transformers ({exc}); "
            "install them with: pip install -e '.[workers]'"
        ) from exc
    found = cached_models(models_root(settings), seed)
    return None if found is None else ModelPaths(found.clip, found.llava)


def ensure_models(settings: Settings, seed: int, echo: Echo = say) -> ModelPaths:
    """The demo's trained CLIP and LLaVA from the cache under ``data_dir/models``, trained first if missing."""
    found = cached_model_paths(settings, seed)
    if found is None:
        echo("demo: training the tiny CLIP and LLaVA on this machine (about 2.5 minutes on 2 cores, once)")
        trained = train_models(models_root(settings), seed, echo=echo)
        return ModelPaths(trained.clip, trained.llava)
    echo(f"demo: models from the cache ({found.clip.parent})")
    return found
