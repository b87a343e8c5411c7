"""An experiment's manifest: everything needed to cite a result and run it again, as JSON.

The recipe of every arm (the selection's or curriculum's recipe as it was when the experiment was created), how
each control was drawn and with which seed, the scorer keys of the runs those recipes read, the base model's
identity (its config.json hash for a local folder, and the content hash the workers computed), the training and
evaluation parameters, each job's data (a sha256 of its sample ids; the ids themselves with ``include_ids``) and
trained model folder, and the code version (``git describe`` when qspace runs from a checkout, else the package
version).
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import __version__
from backend.experiment_results import arm_label, experiment_out
from backend.experiment_stats import BOOT_SEED, N_BOOT
from backend.models import Dataset, Experiment, Run
from backend.queue.jobs import ids_from_bytes, stage_ids

__all__ = ["code_version", "experiment_manifest"]

MANIFEST_VERSION = 1
REPO = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe --tags --always --dirty`` of the checkout qspace runs from, else the package version."""
    if (REPO / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "describe", "--tags", "--always", "--dirty"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            )
            if out.stdout.strip():
                return f"git:{out.stdout.strip()}"
        except (OSError, subprocess.SubprocessError):
            pass
    return f"qspace {__version__}"


def _run_ids(recipe: Any) -> set[int]:
    """Run ids a recipe reads: its resolved axes, and metric ranges written as RUN:METRIC."""
    found: set[int] = set()
    if isinstance(recipe, dict):
        if isinstance(recipe.get("run_id"), int):
            found.add(recipe["run_id"])
        axis = recipe.get("axis")
        if isinstance(axis, str) and axis.partition(":")[0].isdigit():
            found.add(int(axis.partition(":")[0]))
        for v in recipe.values():
            found |= _run_ids(v)
    elif isinstance(recipe, list):
        for v in recipe:
            found |= _run_ids(v)
    return found


def _scorers(session: Session, run_ids: set[int]) -> dict[str, dict[str, Any]]:
    if not run_ids:
        return {}
    runs = session.scalars(select(Run).where(Run.id.in_(sorted(run_ids))).order_by(Run.id))
    return {
        str(r.id): {"kind": r.kind, "scorer_key": r.scorer_key, "params": r.params, "status": r.status} for r in runs
    }


def experiment_manifest(session: Session, exp: Experiment, include_ids: bool = False) -> dict[str, Any]:
    ds = session.get(Dataset, exp.dataset_id)
    by_id = {a.id: a for a in exp.arms}
    jobs_of: dict[int, list[dict[str, Any]]] = {}
    identities: set[str] = set()
    for job in exp.jobs:
        entry: dict[str, Any] = {
            "id": job.id,
            "seed": job.seed,
            "status": job.status,
            "stage_sizes": list(job.stage_sizes or []),
            "sample_ids_sha256": "sha256:" + hashlib.sha256(job.sample_ids).hexdigest(),
            "model_dir": job.model_dir,
            "adapter_dir": job.adapter_dir,
            "attempts": job.attempts,
        }
        if by_id[job.arm_id].kind == "control":
            entry["control_seed"] = job.seed
        summary = job.summary or {}
        if summary.get("base_identity"):
            identities.add(str(summary["base_identity"]))
        if summary:
            entry["training"] = {k: summary.get(k) for k in ("steps", "train_loss", "stages", "skipped")}
        if include_ids:
            entry["sample_ids"] = stage_ids(job) if len(job.stage_sizes or []) > 1 else ids_from_bytes(job.sample_ids)
        jobs_of.setdefault(job.arm_id, []).append(entry)
    arms = []
    all_runs: set[int] = set()
    for a in exp.arms:
        runs = _run_ids(a.recipe)
        all_runs |= runs
        arms.append(
            {
                "id": a.id,
                "kind": a.kind,
                "label": arm_label(a, by_id),
                "source_id": a.source_id,
                "control_of": a.control_of,
                "n": a.n,
                "stage_sizes": list(a.stage_sizes or []),
                "recipe": a.recipe,
                "run_ids": sorted(runs),
                "jobs": jobs_of.get(a.id, []),
            }
        )
    out = experiment_out(session, exp)
    local = exp.base_config_sha256 is not None
    return {
        "manifest_version": MANIFEST_VERSION,
        "code_version": code_version(),
        "experiment": {
            "id": exp.id,
            "name": exp.name,
            "status": exp.status,
            "identity_key": exp.identity_key,
            "created_at": out.created_at.isoformat() if out.created_at else None,
        },
        "dataset": {
            "id": exp.dataset_id,
            "name": ds.name if ds else None,
            "n_samples": ds.n_samples if ds else None,
            "sources": list(ds.sources or []) if ds else [],
            "image_root": ds.image_root if ds else None,
        },
        "base_model": {
            "name": exp.base_model,
            "local": local,
            "config_sha256": exp.base_config_sha256,
            "content_identity": sorted(identities),  # the workers' hash of the folder (or the hub name)
        },
        "training": {"request": exp.train_request, "params": exp.train_params, "params_key": exp.train_params_key},
        "evaluation": {
            "suites": exp.eval_suites,
            "scoring": "multiple choice: the option with the highest total log-likelihood (accuracy); references: "
            "mean negative log-likelihood per answer token (answer_loss)",
            "statistics": {
                "mean_ci": "95% Student-t over seeds (bootstrap over items with one seed)",
                "delta_ci": "paired bootstrap over eval items and seeds, 95% percentile",
                "n_boot": N_BOOT,
                "boot_seed": BOOT_SEED,
            },
        },
        "seeds": list(exp.seeds or []),
        "control": {
            "mode": exp.control,
            "task_mix": exp.control_task_mix,
            "draw": "per seed: numpy PCG64(seed) over the population's sorted sample ids, without replacement; a "
            "curriculum's control keeps its stage count and sizes (stages disjoint, trained in order)",
        },
        "arms": arms,
        "scorers": _scorers(session, all_runs),
        "results": [r.model_dump(mode="json") for r in out.results],
        "contrasts": [c.model_dump(mode="json") for c in out.contrasts],
    }
