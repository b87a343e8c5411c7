"""What an evaluation returns: one outcome per item (the backend bootstraps over them) and the suite's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from backend.eval_specs import ACCURACY, ANSWER_LOSS

__all__ = ["ItemOutcome", "SuiteResult", "summarise"]


@dataclass
class ItemOutcome:
    """One item's result. Multiple choice: ``correct`` (1/0; an lmms-eval task's per-item score, which may be soft
    such as VQA accuracy), ``chosen`` (option index) and every option's total log-likelihood. References:
    ``answer_loss`` (mean nats per answer token over all references) and the token count. ``error`` set = the
    item could not be scored (it counts in no metric)."""

    id: str
    type: str | None = None
    correct: float | None = None
    chosen: int | None = None
    option_logprobs: list[float] | None = None
    answer_loss: float | None = None
    answer_tokens: int | None = None
    error: str | None = None


@dataclass
class SuiteResult:
    suite: str
    digest: str  # the suite file's sha256 (what exactly was evaluated)
    model: str
    metrics: dict[str, float]  # accuracy: share correct; answer_loss: mean over items of their answer_loss
    n_items: dict[str, int]  # items each metric averages over
    by_type: dict[str, dict[str, float]]  # item type -> {metric: value, "n_<metric>": count}
    items: list[ItemOutcome] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _means(outcomes: Sequence[ItemOutcome]) -> tuple[dict[str, float], dict[str, int]]:
    correct = [o.correct for o in outcomes if o.correct is not None]
    losses = [o.answer_loss for o in outcomes if o.answer_loss is not None]
    metrics: dict[str, float] = {}
    counts: dict[str, int] = {}
    if correct:
        metrics[ACCURACY], counts[ACCURACY] = sum(correct) / len(correct), len(correct)
    if losses:
        metrics[ANSWER_LOSS], counts[ANSWER_LOSS] = sum(losses) / len(losses), len(losses)
    return metrics, counts


def summarise(suite: str, digest: str, model: str, outcomes: list[ItemOutcome], seconds: float) -> SuiteResult:
    """Metrics over the items that were scored, overall and per item type."""
    metrics, counts = _means(outcomes)
    by_type: dict[str, dict[str, float]] = {}
    for kind in sorted({o.type for o in outcomes if o.type is not None}):
        m, c = _means([o for o in outcomes if o.type == kind])
        by_type[kind] = {**m, **{f"n_{k}": float(v) for k, v in c.items()}}
    return SuiteResult(
        suite=suite,
        digest=digest,
        model=model,
        metrics=metrics,
        n_items=counts,
        by_type=by_type,
        items=outcomes,
        errors=sum(o.error is not None for o in outcomes),
        seconds=round(seconds, 3),
    )
