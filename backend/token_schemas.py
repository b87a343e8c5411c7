"""Request and response shapes of /api/tokens (admin only)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from backend.tokens import Scope


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    scope: Scope


class TokenOut(BaseModel):
    name: str
    scope: Scope
    created_at: datetime
    created_by: str | None = None
    revoked_at: datetime | None = None


class TokenCreated(TokenOut):
    token: str = Field(description="the secret, shown this once (only its sha256 is stored)")
