"""partial index on errored scores

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # "exclude errored samples" and the error columns of exports look up only the few errored rows.
    op.create_index(
        "ix_scores_errors",
        "scores",
        ["run_id", "sample_id"],
        sqlite_where=sa.text("error IS NOT NULL"),
        postgresql_where=sa.text("error IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_scores_errors", table_name="scores")
