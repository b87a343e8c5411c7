"""FastAPI dependencies: settings, database session, auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, cast

from fastapi import Depends, HTTPException, Path, Request
from sqlalchemy.orm import Session, sessionmaker

from backend.settings import Settings
from backend.space import SpaceStore
from backend.tokens import SCOPES, Principal, Refusal, Scope, authenticate


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

# Scope by route: reads need `read`, DELETE needs `admin`, other mutations `write`; a route marks an exception with
# `openapi_extra=ADMIN_ONLY` (token management) or `READ_ONLY` (previews: a POST body, no change), which also
# shows in the OpenAPI schema as `x-qspace-scope`.
SCOPE_KEY = "x-qspace-scope"
ADMIN_ONLY: dict[str, Any] = {SCOPE_KEY: "admin"}
READ_ONLY: dict[str, Any] = {SCOPE_KEY: "read"}  # a POST that only computes an answer (previews)
READS = frozenset({"GET", "HEAD", "OPTIONS"})
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def needed_scope(method: str, openapi_extra: dict[str, Any] | None) -> Scope:
    """The scope a request of `method` to a route with `openapi_extra` needs."""
    marked = (openapi_extra or {}).get(SCOPE_KEY)
    if marked in SCOPES:
        return cast(Scope, marked)
    if method.upper() in READS:
        return "read"
    return "admin" if method.upper() == "DELETE" else "write"


COOKIE = "qspace_token"  # the UI's thumbnails (<img> cannot send a header): GET only, read scope at most


def _bearer(request: Request) -> tuple[str | None, bool]:
    """The request's token, and whether it came from the UI's cookie rather than the Authorization header."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() == "bearer" and given:
        return given, False
    cookie = request.cookies.get(COOKIE) if request.method in READS else None
    return (cookie, True) if cookie else (None, False)


def require_token(request: Request, settings: SettingsDep, session: SessionDep) -> Principal:
    """Who the request acts as, and whether that scope may call this route. With no token configured (neither
    QSPACE_API_TOKEN nor an active `qspace token`), everything is open, as it always was."""
    given, from_cookie = _bearer(request)
    try:
        who = authenticate(session, given, settings.api_token)
    finally:
        # End the read transaction of the lookup: on SQLite a route that then writes must start from a fresh
        # snapshot, or its upgrade to a write lock fails when another writer committed meanwhile.
        session.rollback()
    if who is None:
        raise HTTPException(
            401,
            "this server needs a token: 'Authorization: Bearer <token>' (`qspace token create`, or QSPACE_API_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if isinstance(who, Refusal):
        raise HTTPException(403, who.reason)
    if from_cookie and isinstance(who, Principal) and who.name is not None:
        who = Principal(who.name, "read")  # a cookie is sent by the browser on its own: it may only read
    route = request.scope.get("route")
    needed = needed_scope(request.method, getattr(route, "openapi_extra", None))
    if not who.allows(needed):
        raise HTTPException(
            403, f"the token {who.name!r} has scope {who.scope}; {request.method} {request.url.path} needs {needed}"
        )
    # New rows of this request record who made them (backend.tokens.stamp_creators).
    session.info["created_by"] = who.name
    return who


PrincipalDep = Annotated[Principal, Depends(require_token)]
