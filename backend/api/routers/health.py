from __future__ import annotations

from fastapi import APIRouter, Request

from backend import __version__
from backend.migrate import current
from backend.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(request: Request) -> Health:
    engine = request.app.state.engine
    return Health(status="ok", version=__version__, database=engine.dialect.name, schema_revision=current(engine))
