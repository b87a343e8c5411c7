"""FastAPI dependencies: settings, database session, auth."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from sqlalchemy.orm import Session, sessionmaker

from backend.settings import Settings
from backend.space import SpaceStore


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    session = factory()
    try:
        yield session
    finally:
        session.close()


def get_space_store(request: Request) -> SpaceStore:
    space: SpaceStore = request.app.state.space
    return space


# Path ids fit in the int32 primary keys of every backend; larger numbers are 422, not a driver error.
Id = Annotated[int, Path(ge=1, le=2_147_483_647)]

SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SpaceDep = Annotated[SpaceStore, Depends(get_space_store)]
SessionDep = Annotated[Session, Depends(get_session)]

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def require_token(request: Request, settings: SettingsDep) -> None:
    """When QSPACE_API_TOKEN is set, mutating requests must carry it as a bearer token."""
    token = settings.api_token
    if not token or request.method not in MUTATING:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(
            401,
            "this server needs 'Authorization: Bearer <QSPACE_API_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(403, "the bearer token is wrong")
