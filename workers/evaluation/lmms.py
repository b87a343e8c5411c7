"""Running lmms-eval tasks (GQA, TextVQA, ScienceQA-IMG, VizWiz, POPE, local ones...) on a qspace model.

:func:`run_lmms_task` evaluates a model (:class:`~workers.evaluation.lmms_model.QspaceLlava`) on a task through
lmms-eval's own evaluator and maps its per-sample log to :class:`ItemOutcome` (``correct`` = the score the task's
first metric gives the item; option log-likelihoods where the task scores options), so an experiment's paired
bootstrap treats an ``lmms:<task>`` suite (:mod:`backend.lmms_specs`) like any other; :func:`run_lmms_ref` is the
experiment worker's entry. lmms-eval is the optional extra ``qspace[lmms]``.

Three workarounds for lmms-eval 0.7.3 (each says why where it is): log-likelihood responses travel wrapped in its
``GenerationResult`` (lmms_model.py); its filelock patch is skipped on filelock 4; and, not fixable here, its
default processing of an ``output_type: loglikelihood`` result fails (it unpacks the list of responses as one
pair), so such a task needs its own ``process_results``, as lmms-eval's own loglikelihood tasks have.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from backend.lmms_specs import BUILTIN_PATH, LMMS_PREFIX, lmms_task_digest, local_task_index, split_lmms_name
from workers.evaluation.evaluator import SuiteEvaluator
from workers.evaluation.lmms_model import MODEL_NAME, QspaceLlava, Stopped, register
from workers.evaluation.outcomes import ItemOutcome, SuiteResult, summarise

__all__ = ["MODEL_NAME", "LmmsResult", "QspaceLlava", "register", "run_lmms_ref", "run_lmms_task"]

DEFAULT_METRIC = {"multiple_choice": "acc", "loglikelihood": "acc", "generate_until": "exact_match"}


@dataclass
class LmmsResult(SuiteResult):
    """A :class:`SuiteResult` of an lmms-eval task, with what lmms-eval itself reported."""

    task: str = ""
    metric: dict[str, str] = field(default_factory=dict)  # (sub)task -> the lmms-eval metric behind accuracy
    lmms_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # lmms-eval's aggregates per (sub)task
    responses: dict[str, str] = field(default_factory=dict)  # item id -> generated text (generate_until tasks)
    lmms_eval_version: str = ""


def _item_score(value: Any, score_key: str) -> float | None:
    if isinstance(value, dict):
        value = value.get(score_key)
    if isinstance(value, (bool, int, float)):
        return float(value)
    return None


@dataclass
class _Mapped:
    outcomes: list[ItemOutcome] = field(default_factory=list)
    metric: dict[str, str] = field(default_factory=dict)
    responses: dict[str, str] = field(default_factory=dict)


def _outcomes(results: dict[str, Any], adapter: QspaceLlava) -> _Mapped:
    """One outcome per logged sample; ids are doc ids (``<subtask>/<doc id>`` when a group ran several)."""
    samples: dict[str, list[dict[str, Any]]] = results.get("samples") or {}
    several = len(samples) > 1
    out = _Mapped()
    for sub, logged in sorted(samples.items()):
        cfg = results["configs"][sub]
        listed = cfg.get("metric_list") or [{"metric": DEFAULT_METRIC.get(cfg.get("output_type", ""), "acc")}]
        metric = out.metric[sub] = str(listed[0]["metric"])
        score_key = cfg.get("score_key") or "score"
        for s in sorted(logged, key=lambda s: int(s["doc_id"])):
            doc_id = int(s["doc_id"])
            doc_type = (s.get("doc") or {}).get("type")
            outcome = ItemOutcome(
                id=f"{sub}/{doc_id}" if several else str(doc_id),
                type=doc_type if isinstance(doc_type, str) else (sub if several else None),
            )
            lps = adapter.logprobs.get((sub, doc_id))
            if lps is not None:
                outcome.option_logprobs = lps
                if len(lps) > 1:  # ties: the first option, as lmms-eval's argmin picks
                    outcome.chosen = max(range(len(lps)), key=lambda i: (lps[i], -i))
            error = adapter.errors.get((sub, doc_id))
            score = _item_score(s.get(metric), score_key)
            if error is None and score is None:
                error = f"lmms-eval metric {metric!r} gives no per-item score ({type(s.get(metric)).__name__})"
            if error is None:
                outcome.correct = score
            else:
                outcome.error, outcome.option_logprobs, outcome.chosen = error, None, None
            if (sub, doc_id) in adapter.responses:
                out.responses[outcome.id] = adapter.responses[(sub, doc_id)]
            out.outcomes.append(outcome)
    return out


def _numbers(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {
        task: {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for task, values in (results.get("results") or {}).items()
    }


def _skip_filelock_patch(lmms_evaluator: Any) -> None:
    """lmms-eval 0.7.3 patches the internals of filelock < 4 (``filelock._api``) before it loads datasets, and dies
    on filelock 4 (what torch and huggingface_hub install here), which has no such module. The patch guards nested
    dataset loads across ranks sharing a lock file; one process loading its task's dataset does not need it. So
    with filelock 4, mark it done; with an older filelock, lmms-eval patches as it means to."""
    if importlib.util.find_spec("filelock._api") is None:
        lmms_evaluator._enable_reentrant_filelocks._patched = True


def _task_of(
    task_or_yaml: str | os.PathLike[str], include_path: str | os.PathLike[str] | None
) -> tuple[str, Path | None]:
    """(task name, its YAML when local)."""
    p = Path(task_or_yaml)
    if p.suffix == ".yaml" and p.is_file():
        index = local_task_index([p])
        if not index:
            raise ValueError(f"{p}: defines no lmms-eval task (no `task:` name)")
        return next(iter(index)), p.resolve()
    task = str(task_or_yaml)
    local = local_task_index([Path(include_path)]) if include_path is not None else {}
    return task, local.get(task)


def run_lmms_task(
    model: str | os.PathLike[str] | SuiteEvaluator,
    task_or_yaml: str | os.PathLike[str],
    *,
    limit: int | None = None,
    include_path: str | os.PathLike[str] | None = None,
    device: str | None = None,
    template: str = "auto",
    max_new_tokens: int = 64,
    name: str | None = None,
    digest: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LmmsResult | None:
    """Evaluate ``model`` (a model folder or name, or a loaded evaluator) on an lmms-eval task (its name, or the
    path of its YAML) through lmms-eval's own evaluator: per-item outcomes and ``accuracy``, plus lmms-eval's
    aggregates. ``include_path``: a folder of local task YAMLs (lmms-eval's ``--include_path``; a task YAML's own
    folder when a path is given). None when ``should_stop()`` turned true."""
    from lmms_eval import evaluator as lmms_evaluator
    from lmms_eval.tasks import TaskManager

    _skip_filelock_patch(lmms_evaluator)
    task, yaml_path = _task_of(task_or_yaml, include_path)
    folder = str(yaml_path.parent) if yaml_path is not None else (str(include_path) if include_path else None)
    evaluator = model if isinstance(model, SuiteEvaluator) else SuiteEvaluator(model, device=device, template=template)
    adapter = QspaceLlava(evaluator=evaluator, max_new_tokens=max_new_tokens, should_stop=should_stop)
    # A local task needs only its own folder indexed, not lmms-eval's hundreds of built-in task files.
    manager = TaskManager("WARNING", include_path=folder, include_defaults=yaml_path is None)
    t0 = time.perf_counter()
    try:
        results = lmms_evaluator.simple_evaluate(
            model=adapter,
            tasks=[task],
            limit=limit,
            task_manager=manager,
            log_samples=True,
            bootstrap_iters=0,
            verbosity="WARNING",
            process_docs_parallel=1,
        )
    except Stopped:
        return None
    mapped = _outcomes(results, adapter)
    suite_name = name or LMMS_PREFIX + task
    base = summarise(
        suite_name, digest or lmms_task_digest(task, yaml_path), evaluator.name, mapped.outcomes,
        time.perf_counter() - t0,
    )
    return LmmsResult(
        **{f.name: getattr(base, f.name) for f in fields(SuiteResult)},
        task=task,
        metric=mapped.metric,
        lmms_metrics=_numbers(results),
        responses=mapped.responses,
        lmms_eval_version=importlib.metadata.version("lmms_eval"),
    )


def run_lmms_ref(
    evaluator: SuiteEvaluator, ref: dict[str, Any], *, should_stop: Callable[[], bool] | None = None
) -> LmmsResult | None:
    """Evaluate an experiment's ``lmms:<task>`` suite (its stored reference: name, path, digest), refusing a local
    task whose files changed since the experiment was created."""
    task = split_lmms_name(ref["name"])
    path = str(ref.get("path") or "")
    yaml_path = None if not path or path.startswith(BUILTIN_PATH) else Path(path)
    digest = lmms_task_digest(task, yaml_path)
    if digest != ref["digest"]:
        raise ValueError(
            f"eval suite {ref['name']!r} ({path}) changed since the experiment was created "
            f"(digest {digest[:19]}, expected {str(ref['digest'])[:19]}); create a new experiment to use it"
        )
    return run_lmms_task(
        evaluator, yaml_path or task, name=ref["name"], digest=ref["digest"], should_stop=should_stop
    )
