"""Eval suites an experiment may name: the configured ones (QSPACE_EVAL_SUITES) and data_dir/eval_suites/."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import SettingsDep
from backend.eval_suites import list_suites
from backend.experiment_schemas import EvalSuiteOut

router = APIRouter(tags=["experiments"])


@router.get("/eval_suites", response_model=list[EvalSuiteOut])
def eval_suites(settings: SettingsDep) -> list[EvalSuiteOut]:
    """Every registered suite with its item count, metrics and item types; a malformed one carries `error`
    (file:line: field: why) and cannot be used."""
    return [EvalSuiteOut.model_validate(s) for s in list_suites(settings)]
