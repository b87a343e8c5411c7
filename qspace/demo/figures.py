"""What the demo's scores found: how well CLIP similarity and the MLLM loss pick out the injected defects."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import select

from backend.db import make_engine, make_session_factory
from backend.models import Sample, Score
from backend.settings import Settings
from qspace.synthetic import TASK_TYPES

ANSWER_DEFECTS = ("shuffled", "wrong_fact", "truncated", "filler")


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counting half: the Mann-Whitney U statistic / (n_pos n_neg)."""
    p, q = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if not len(p) or not len(q):
        return float("nan")
    x = np.concatenate([p, q])
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first occurrence
    ranks = (first + (counts - 1) / 2 + 1)[inverse]  # average ranks over ties
    return float((ranks[: len(p)].sum() - len(p) * (len(p) + 1) / 2) / (len(p) * len(q)))


def quality_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How well the scores find the labelled defects. ``rows``: {task_type, defect, similarity, loss_mean,
    loss_sum} per sample (missing scores as None).

    - ``clip_auc``: clean pairs above swapped-image pairs on CLIP similarity;
    - ``loss_auc``: corrupted answers (shuffled, wrong_fact, truncated, filler) above clean ones on loss_mean;
    - per task type and per defect kind, and the mean loss_sum of clean samples per task type.
    """

    def col(name: str, keep: Callable[[dict[str, Any]], bool]) -> list[float]:
        return [float(r[name]) for r in rows if keep(r) and r.get(name) is not None]

    def is_clean(r: dict[str, Any]) -> bool:
        return r["defect"] == "none"

    def of_type(t: str, defects: Sequence[str]) -> Callable[[dict[str, Any]], bool]:
        return lambda r: r["task_type"] == t and r["defect"] in defects

    def of_defect(defects: Sequence[str]) -> Callable[[dict[str, Any]], bool]:
        return lambda r: r["defect"] in defects

    out: dict[str, Any] = {
        "n": len(rows),
        "clip_auc": auc(col("similarity", is_clean), col("similarity", of_defect(["swapped_image"]))),
        "loss_auc": auc(col("loss_mean", of_defect(ANSWER_DEFECTS)), col("loss_mean", is_clean)),
        "clip_auc_by_type": {
            t: auc(col("similarity", of_type(t, ["none"])), col("similarity", of_type(t, ["swapped_image"])))
            for t in TASK_TYPES
        },
        "loss_auc_by_defect": {
            d: auc(col("loss_mean", of_defect([d])), col("loss_mean", is_clean)) for d in ANSWER_DEFECTS
        },
        "loss_sum_by_type": {},
    }
    for t in TASK_TYPES:
        sums = col("loss_sum", of_type(t, ["none"]))
        out["loss_sum_by_type"][t] = float(np.mean(sums)) if sums else float("nan")
    return _rounded(out)


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x


def stored_figures(settings: Settings, dataset_id: int, clip_run: int, loss_run: int) -> dict[str, Any]:
    """:func:`quality_figures` of the scores stored for the dataset's two runs and its defect labels."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session:
            rows: dict[int, dict[str, Any]] = {
                sid: {"task_type": tt, "defect": (meta or {}).get("defect", "none")}
                for sid, tt, meta in session.execute(
                    select(Sample.id, Sample.task_type, Sample.meta).where(Sample.dataset_id == dataset_id)
                )
            }
            for sid, metrics in session.execute(
                select(Score.sample_id, Score.metrics).where(Score.run_id.in_([clip_run, loss_run]))
            ):
                if metrics and sid in rows:
                    rows[sid].update(metrics)
    finally:
        engine.dispose()
    return quality_figures(list(rows.values()))


def summary(figures: dict[str, Any]) -> str:
    sums = figures["loss_sum_by_type"]
    return (
        f"swapped images vs clean pairs, CLIP similarity: AUC {figures['clip_auc']:.3f}\n"
        f"corrupted vs clean answers, loss_mean: AUC {figures['loss_auc']:.3f} "
        f"({', '.join(f'{k} {v:.2f}' for k, v in figures['loss_auc_by_defect'].items())})\n"
        f"mean loss_sum of clean samples: " + ", ".join(f"{k} {v:.1f}" for k, v in sums.items())
    )
