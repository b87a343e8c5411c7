"""Task-type counts kept with each dataset and each saved selection: at 10M samples, counting them on every page
load (a GROUP BY over the samples, every selection's id list) took seconds

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("datasets", "selections")


def upgrade() -> None:
    # Nullable: rows made before this revision have none and are counted as before when asked.
    kind = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    for table in TABLES:
        op.add_column(table, sa.Column("task_type_counts", kind, nullable=True))


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_column(table, "task_type_counts")
