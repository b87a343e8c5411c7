"""Measure the demo's models outside the demo: score a synthetic dataset folder in this process with the ``clip``
and ``mllm_loss`` scorers and report how well the scores find its defects (the figures tests/test_demo.py checks
through the queue).

``python -m qspace.demo.evaluate OUT [--seed S] [--set FIELD=VALUE] [--eval DATASET_DIR]`` trains the models of a
recipe under OUT (writing their corpus first; cached) and, with ``--eval``, measures them on a ``make_svit_like``
folder: how recipe trials are run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from backend.scorer_specs import ScoreItem
from qspace.demo.figures import quality_figures
from qspace.demo.messages import Echo, say
from qspace.demo.models import train_models
from qspace.synthetic import TASK_TYPES, svit_task_files
from workers.demo_models.recipe import THREADS, Recipe, parse_overrides, quiet, torch_threads
from workers.demo_train import DemoModels


def evaluate(dataset_dir: Path, models: DemoModels, log: Echo | None = None) -> dict[str, Any]:
    """Score a ``make_svit_like`` folder in this process with the ``clip`` and ``mllm_loss`` scorers and measure
    how well the scores find its defects."""
    from workers.scorers.registry import build_scorer

    report_line = log or say
    items: list[ScoreItem] = []
    task: list[str] = []
    defect: list[str] = []
    for t, path in zip(TASK_TYPES, svit_task_files(dataset_dir), strict=True):
        for rec in json.loads(path.read_text()):
            items.append(ScoreItem(len(items), rec["conversations"], [str(Path(dataset_dir) / rec["image"])]))
            task.append(t)
            defect.append(rec.get("defect", "none"))
    with torch_threads(THREADS), quiet():
        t0 = time.perf_counter()
        clip = build_scorer("clip", {"model": str(models.clip), "num_workers": 0}).score_all(items)
        t_clip = time.perf_counter() - t0
        t0 = time.perf_counter()
        mllm = build_scorer("mllm_loss", {"model": str(models.llava), "num_workers": 0, "batch_size": 16}).score_all(
            items
        )
        t_mllm = time.perf_counter() - t0
    sim = {i: r.metrics["similarity"] for i, r in clip.items() if r.metrics}
    loss = {i: r.metrics for i, r in mllm.items() if r.metrics}
    report = quality_figures(
        [
            {"task_type": task[i], "defect": defect[i], "similarity": sim.get(i), **(loss.get(i) or {})}
            for i in range(len(items))
        ]
    )
    report["seconds"] = {"clip": round(t_clip, 1), "mllm_loss": round(t_mllm, 1)}
    report_line(json.dumps(report, indent=1))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qspace.demo.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="models root (the cache folder is made under it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a recipe field")
    ap.add_argument("--eval", type=Path, help="a make_svit_like folder to score and measure")
    args = ap.parse_args(argv)
    models = train_models(args.out, args.seed, replace(Recipe(), **parse_overrides(args.set)))
    print(json.dumps(models.manifest, indent=1))
    if args.eval:
        evaluate(args.eval, models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
