"""API tokens: list, create (the secret is in the answer, once), revoke. Admin only, on every method."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from backend import tokens as service
from backend.api.deps import ADMIN_ONLY, PrincipalDep, SessionDep
from backend.token_schemas import TokenCreate, TokenCreated, TokenOut

router = APIRouter(tags=["tokens"])

TokenName = Annotated[str, Path(min_length=1, max_length=100)]


@router.get("/tokens", response_model=list[TokenOut], openapi_extra=ADMIN_ONLY)
def list_tokens(session: SessionDep) -> list[TokenOut]:
    return [TokenOut(**asdict(t)) for t in service.list_tokens(session)]


@router.post("/tokens", response_model=TokenCreated, status_code=201, openapi_extra=ADMIN_ONLY)
def create_token(body: TokenCreate, session: SessionDep, who: PrincipalDep) -> TokenCreated:
    # On an open server anyone could otherwise make the first admin token and lock everyone else out: the first
    # token comes from `qspace token create` (shell access to the store) or QSPACE_API_TOKEN.
    if who.name is None:
        raise HTTPException(403, "no token is configured: create the first one with `qspace token create`")
    try:
        info, secret = service.create_token(session, body.name, body.scope, created_by=who.name)
    except service.TokenError as exc:
        raise HTTPException(409 if "exists" in str(exc) else 422, str(exc)) from None
    return TokenCreated(**asdict(info), token=secret)


@router.delete("/tokens/{name}", response_model=TokenOut)
def revoke_token(name: TokenName, session: SessionDep) -> TokenOut:
    """Revoke a token at once (DELETE: admin). The row stays, so its name is not reused."""
    try:
        info = service.revoke_token(session, name)
    except service.TokenError as exc:
        raise HTTPException(404, str(exc)) from None
    return TokenOut(**asdict(info))
