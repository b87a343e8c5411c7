"""Checking an experiment request before anything is written: the base model, the training parameters, the eval
suites and the arms, and the identity that makes a second post of the same experiment resume the first."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from backend.eval_specs import EvalSuiteError
from backend.eval_suites import UnknownSuite, find_suite, suite_types
from backend.experiment_arms import ArmError, ArmPlan, resolve_arm
from backend.experiment_schemas import ExperimentCreate
from backend.models import Dataset
from backend.settings import Settings
from backend.train_specs import TrainParams, TrainParamsError, resolve_train_params, train_params_key

__all__ = ["Checked", "ExperimentError", "check_base_model", "check_request"]

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ExperimentError(ValueError):
    """A request that cannot become an experiment; the message names the field (HTTP 422). ``problem`` holds
    the file, line and field of a malformed eval suite."""

    def __init__(self, message: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.problem = problem


def check_base_model(value: str) -> tuple[str, str | None]:
    """(the model as workers will load it, sha256 of its config.json or None for a hub name).

    A local folder must exist and hold a config.json whose ``model_type`` is LLaVA-like (llava, llava_next,
    vipllava...); a hub-style ``org/name`` that is no local path is accepted as it is (workers load it).
    """
    text = value.strip()
    where = f"base_model {value!r}"
    if not text or "\x00" in text:
        raise ExperimentError(f"{where}: empty or not a valid name")
    try:
        path = Path(text).expanduser()
        exists = path.exists()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ExperimentError(f"{where}: {exc}") from None
    if not exists:
        if text.startswith(("/", ".", "~")) or not HUB_NAME.match(text) or ".." in text:
            raise ExperimentError(f"{where}: no such local folder, and not a hub name like 'org/name'")
        return text, None
    config = path / "config.json"
    if not path.is_dir() or not config.is_file():
        raise ExperimentError(f"{where}: not a model folder (no config.json)")
    try:
        raw = config.read_bytes()
        model_type = str(json.loads(raw).get("model_type", ""))
    except (OSError, ValueError, AttributeError) as exc:
        raise ExperimentError(f"{where}: config.json is unreadable ({exc})") from None
    if "llava" not in model_type.lower():
        raise ExperimentError(f"{where}: model_type {model_type!r} is not a LLaVA-style model (llava, llava_next...)")
    return str(path.resolve()), "sha256:" + hashlib.sha256(raw).hexdigest()


@dataclass
class Checked:
    """A request with every part resolved and checked (nothing written yet)."""

    dataset: Dataset
    base_model: str
    base_config_sha256: str | None
    params: TrainParams
    params_key: str
    suites: list[dict[str, Any]]
    arms: list[ArmPlan]
    identity_key: str


def check_request(session: Session, settings: Settings, dataset: Dataset, req: ExperimentCreate) -> Checked:
    """Resolve and check everything a request names; ExperimentError (422) naming the first problem."""
    given = req.base_model or dataset.experiment_base_model
    if not given:
        raise ExperimentError(
            f"base_model: none given, and dataset {dataset.id} has no experiment base model "
            f"(set one with PATCH /api/datasets/{dataset.id} {{experiment_base_model}})"
        )
    base, config_sha = check_base_model(given)
    try:
        params = resolve_train_params(req.train)
        key = train_params_key(params)
    except TrainParamsError as exc:
        raise ExperimentError(str(exc)) from None
    suites = []
    for name in req.eval.suites:
        try:
            suite = find_suite(settings, name)
        except UnknownSuite as exc:
            raise ExperimentError(str(exc)) from None
        except EvalSuiteError as exc:
            problem = {"suite": name, "file": exc.path, "line": exc.line, "field": exc.field}
            raise ExperimentError(f"eval.suites: suite {name!r} is malformed: {exc}", problem) from None
        suites.append(
            {
                "name": suite.name,
                "path": suite.path,
                "digest": suite.digest,
                "n_items": len(suite.items),
                "metrics": suite.metrics,
                "types": suite_types(suite),
            }
        )
    try:
        arms = [resolve_arm(session, dataset.id, ref) for ref in req.arms]
    except ArmError as exc:
        raise ExperimentError(str(exc)) from None
    identity = {
        "dataset_id": dataset.id,
        "name": req.name or "",
        "base_model": base,
        "base_config_sha256": config_sha,
        "arms": [[a.kind, a.source_id] for a in arms],
        "seeds": sorted(req.seeds),
        "control": req.control,
        "control_task_mix": req.control_task_mix and req.control == "random",
        "train_params_key": key,
        "suites": [[s["name"], s["digest"]] for s in suites],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return Checked(dataset, base, config_sha, params, key, suites, arms, digest)
