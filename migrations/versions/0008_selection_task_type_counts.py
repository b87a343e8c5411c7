"""Each saved selection's task-type counts, kept with it: listing a 10M dataset's selections read every id list

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


def upgrade() -> None:
    # Nullable: selections saved before this revision have none and are counted from their ids when listed.
    kind = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    op.add_column("selections", sa.Column("task_type_counts", kind, nullable=True))


def downgrade() -> None:
    op.drop_column("selections", "task_type_counts")
