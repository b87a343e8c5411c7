"""API tokens (hashed, named, scoped) and who created each dataset, run, selection, curriculum and experiment

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATED_BY = ("datasets", "runs", "selections", "curricula", "experiments")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    # A nullable column is a plain ALTER TABLE ADD COLUMN on both backends: no table copy, existing rows keep NULL.
    for table in CREATED_BY:
        op.add_column(table, sa.Column("created_by", sa.String(length=100), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35), never a batch table copy: copying `datasets` with foreign keys on would
    # cascade-delete its samples.
    for table in reversed(CREATED_BY):
        op.drop_column(table, "created_by")
    op.drop_table("api_tokens")
