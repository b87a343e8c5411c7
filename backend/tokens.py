"""API tokens: named, scoped bearer tokens stored as sha256 hashes, and who a request acts as.

Scopes nest: `read` (view, export) < `write` (ingest, score, select, experiment) < `admin` (delete, manage tokens).
`QSPACE_API_TOKEN`, when set, is one more admin token, named "env". With no token configured at all (neither the
variable nor an active row here) the server is open, as before tokens existed.

A token is 32 random bytes, so one unsalted sha256 is enough to keep the stored form useless to a thief (nothing to
brute-force); looking it up by hash is one indexed read per request, with no cache, so a revoke takes effect on the
very next request, in every process.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import event, exists, select
from sqlalchemy.orm import Session, sessionmaker

from backend.models import ApiToken, Curriculum, Dataset, Experiment, Run, Selection, utcnow

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
ENV_NAME = "env"  # the principal name of QSPACE_API_TOKEN
PREFIX = "qs_"  # makes a qspace token recognisable in a config file or a leak scanner
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")

# The rows that record who created them (`created_by`).
STAMPED = (Dataset, Run, Selection, Curriculum, Experiment)


class TokenError(ValueError):
    """A token request that cannot be done (bad name or scope, name taken, no such token)."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token's name ("env" for QSPACE_API_TOKEN; None on an open server) and its scope."""

    name: str | None
    scope: Scope

    def allows(self, needed: Scope) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(needed)


OPEN = Principal(None, "admin")


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scope: Scope
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(row.name, row.scope, row.created_at, row.created_by, row.revoked_at)  # type: ignore[arg-type]


def create_token(session: Session, name: str, scope: str, created_by: str | None = None) -> tuple[TokenInfo, str]:
    """A new token: its description and its secret (shown once; only the hash is stored). Commits."""
    if not NAME_RE.match(name):
        raise TokenError(f"token name {name!r}: use 1-100 letters, digits, '_', '.', '@' or '-'")
    if name == ENV_NAME:
        raise TokenError(f"token name {ENV_NAME!r} is reserved for QSPACE_API_TOKEN")
    if scope not in SCOPES:
        raise TokenError(f"scope {scope!r}: use one of {', '.join(SCOPES)}")
    # Names stay unique even after a revoke, so a `created_by` keeps naming one token.
    if session.scalar(select(exists().where(ApiToken.name == name))):
        raise TokenError(f"a token named {name!r} exists already (revoked names are not reused)")
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, scope=scope, token_hash=hash_token(secret), created_by=created_by)
    session.add(row)
    session.commit()
    return _info(row), secret


def list_tokens(session: Session, include_revoked: bool = True) -> list[TokenInfo]:
    query = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return [_info(r) for r in session.scalars(query)]


def revoke_token(session: Session, name: str) -> TokenInfo:
    """Revoke the token `name` (at once: nothing caches tokens). Revoking twice is a no-op. Commits."""
    row = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if row is None:
        raise TokenError(f"no token named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return _info(row)


def any_active(session: Session) -> bool:
    return bool(session.scalar(select(exists().where(ApiToken.revoked_at.is_(None)))))


@dataclass(frozen=True)
class Refusal:
    """Why a bearer token was not accepted (the API turns it into a 403)."""

    reason: str


def authenticate(session: Session, given: str | None, env_token: str | None) -> Principal | Refusal | None:
    """Who `given` (a bearer token, or None) is. None: no token given on a server that has tokens."""
    if given and env_token and hmac.compare_digest(given.encode(), env_token.encode()):
        return Principal(ENV_NAME, "admin")
    if given:
        digest = hash_token(given)
        row = session.execute(
            select(ApiToken.name, ApiToken.scope, ApiToken.token_hash, ApiToken.revoked_at).where(
                ApiToken.token_hash == digest
            )
        ).first()
        if row is not None and hmac.compare_digest(row.token_hash, digest):
            if row.revoked_at is not None:
                return Refusal(f"the token {row.name!r} was revoked")
            return Principal(row.name, row.scope)
    if not env_token and not any_active(session):
        return OPEN  # no token configured: open, whatever the request carries
    return Refusal("the bearer token is wrong") if given else None


def _stamp(session: Session, _context: Any, _instances: Any) -> None:
    who = session.info.get("created_by")
    if who is None:
        return
    for obj in session.new:
        if isinstance(obj, STAMPED) and obj.created_by is None:
            obj.created_by = who


def stamp_creators(factory: sessionmaker[Session]) -> None:
    """Sessions of `factory` fill `created_by` of new datasets, runs, selections, curricula and experiments from
    ``session.info["created_by"]`` (set by the API's auth dependency), so no route has to pass it along."""
    if not event.contains(factory, "before_flush", _stamp):
        event.listen(factory, "before_flush", _stamp)
