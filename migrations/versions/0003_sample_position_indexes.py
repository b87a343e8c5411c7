"""sample pages by position

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 19:35:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Pages of a dataset (optionally of one task type) read an index range instead of scanning for OFFSET.
    op.create_index("ix_samples_dataset_position", "samples", ["dataset_id", "position"])
    op.create_index("ix_samples_dataset_task_position", "samples", ["dataset_id", "task_type", "position"])
    op.drop_index("ix_samples_dataset_task", table_name="samples")


def downgrade() -> None:
    op.create_index("ix_samples_dataset_task", "samples", ["dataset_id", "task_type"])
    op.drop_index("ix_samples_dataset_task_position", table_name="samples")
    op.drop_index("ix_samples_dataset_position", table_name="samples")
