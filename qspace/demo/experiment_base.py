"""What the demo leaves ready for experiments: held-out clean eval suites and the dataset's experiment base model.

- Two multiple-choice suites of the synthetic data, generated with their own seed stream (no demo dataset or
  training corpus shares it), written under ``data_dir/eval_suites/`` where ``GET /api/eval_suites`` finds them:
  ``synthetic-heldout`` (colours, shapes, counts, positions, drawn words) and ``synthetic-colour-count`` (the two
  kinds the tiny LLaVA can read from an image at all; the others stay at chance even for the fully trained model,
  so they only add noise to a comparison; see BENCHMARKS.md, "Does the loop have power?").
- The base: the demo LLaVA with its projector re-initialised (language model and vision tower kept), set as the
  dataset's ``experiment_base_model``. A base that already reads images well leaves nothing for a selection to
  change; one trained from scratch never learns to use the image at this size. Re-learning the projector mirrors
  LLaVA's own stages and gives the loop power (issue 15's measurements).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx

from backend.settings import Settings
from qspace.demo.messages import DemoError, Echo, say
from qspace.demo.models import ModelPaths
from qspace.synthetic import make_eval_suite
from qspace.synthetic.eval_suite import EVAL_ITEM_TYPES

SUITES: dict[str, tuple[str, ...]] = {
    "synthetic-heldout": EVAL_ITEM_TYPES,
    "synthetic-colour-count": ("colour", "count"),
}
SUITE_ITEMS = 500
SUITE_SEED = 0


def ensure_eval_suites(settings: Settings, echo: Echo = say) -> list[str]:
    """The demo's held-out suites (written once, atomically); returns their names."""
    root = settings.data_dir / "eval_suites"
    for name, types in SUITES.items():
        folder = root / name
        if (folder / f"{name}.jsonl").is_file():
            continue
        echo(f"demo: writing the held-out eval suite {name!r} ({SUITE_ITEMS} multiple-choice items)")
        tmp = root / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            make_eval_suite(tmp, n=SUITE_ITEMS, seed=SUITE_SEED, types=types, file_name=f"{name}.jsonl")
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete earlier attempt
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return list(SUITES)


def ensure_base_model(settings: Settings, models: ModelPaths, seed: int) -> Path:
    """The projector-reinitialised copy of the demo LLaVA (cached beside the models)."""
    from workers.training.model import reinit_projector

    dst = settings.data_dir / "models" / f"experiment-base-{models.llava.parent.name}-seed{seed}"
    if not (dst / "config.json").is_file():
        reinit_projector(models.llava, dst, seed=seed)
    return dst


def prepare_experiments(
    client: httpx.Client, settings: Settings, ds: int, models: ModelPaths, seed: int, echo: Echo = say
) -> Path:
    """Suites written, base written and set as the dataset's experiment base (PATCH /api/datasets/{ds})."""
    ensure_eval_suites(settings, echo)
    base = ensure_base_model(settings, models, seed)
    r = client.patch(f"/api/datasets/{ds}", json={"experiment_base_model": str(base)})
    if r.status_code != 200:
        raise DemoError(f"PATCH dataset {ds}: HTTP {r.status_code}: {r.text[:300]}")
    echo(f"demo: experiments start from {base.name} (the demo LLaVA, projector re-initialised)")
    return base
