from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from backend import __version__
from backend.migrate import current
from backend.schemas import Health
from backend.tokens import any_active

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(request: Request) -> Health:
    """Open to all (probes): says whether the other routes need a bearer token."""
    engine = request.app.state.engine
    revision = current(engine)
    auth = bool(request.app.state.settings.api_token)
    if not auth and revision is not None:
        with Session(engine) as session:
            try:
                auth = any_active(session)
            except DBAPIError:  # a schema before tokens (0007) has no table: nothing configured
                auth = False
    return Health(
        status="ok", version=__version__, database=engine.dialect.name, schema_revision=revision, auth_required=auth
    )
