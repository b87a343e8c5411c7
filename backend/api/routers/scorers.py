"""`GET /api/scorers`: the scorer kinds, their parameter schemas and metrics (torch-free)."""

from __future__ import annotations

from fastapi import APIRouter

from backend.run_schemas import ScorerOut
from backend.scorer_specs import list_specs

router = APIRouter(tags=["scorers"])


@router.get("/scorers", response_model=list[ScorerOut])
def get_scorers() -> list[ScorerOut]:
    """Every scorer kind with the JSON schema of its params and the metrics its runs store."""
    return [ScorerOut.model_validate(spec) for spec in list_specs()]
