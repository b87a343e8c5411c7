"""Evaluating a trained model on eval suites (:mod:`backend.eval_specs`): multiple-choice accuracy by
log-likelihood over the options, answer loss on reference answers, one outcome per item."""

from workers.torch_compat import ensure_torchvision

ensure_torchvision()

from workers.evaluation.evaluator import SuiteEvaluator, evaluate_suite  # noqa: E402
from workers.evaluation.outcomes import ItemOutcome, SuiteResult  # noqa: E402

__all__ = ["ItemOutcome", "SuiteEvaluator", "SuiteResult", "evaluate_suite"]
