"""experiments: arms, jobs, results; a dataset's experiment base model

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONB = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite >= 3.35 also drops it natively): a batch copy of `datasets` would drop the
    # table, and with foreign keys on that cascades into every sample.
    op.add_column("datasets", sa.Column("experiment_base_model", sa.Text(), nullable=True))

    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("base_model", sa.Text(), nullable=False),
        sa.Column("base_config_sha256", sa.String(length=80), nullable=True),
        sa.Column("seeds", JSONB, nullable=False),
        sa.Column("control", sa.String(length=16), nullable=False),
        sa.Column("control_task_mix", sa.Boolean(), nullable=False),
        sa.Column("train_request", JSONB, nullable=False),
        sa.Column("train_params", JSONB, nullable=False),
        sa.Column("train_params_key", sa.String(length=64), nullable=False),
        sa.Column("eval_suites", JSONB, nullable=False),
        sa.Column("identity_key", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_id", "identity_key", name="uq_experiments_dataset_identity"),
    )
    op.create_index("ix_experiments_dataset_id", "experiments", ["dataset_id"])

    op.create_table(
        "experiment_arms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=True),
        sa.Column("control_of", sa.Integer(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("stage_sizes", JSONB, nullable=False),
        sa.Column("recipe", JSONB, nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["control_of"], ["experiment_arms.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_experiment_arms_experiment_id", "experiment_arms", ["experiment_id"])

    op.create_table(
        "experiment_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("arm_id", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("samples_per_s", sa.Float(), nullable=True),
        sa.Column("eta_s", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sample_ids", sa.LargeBinary(), nullable=False),
        sa.Column("stage_sizes", JSONB, nullable=False),
        sa.Column("output_dir", sa.Text(), nullable=True),
        sa.Column("model_dir", sa.Text(), nullable=True),
        sa.Column("adapter_dir", sa.Text(), nullable=True),
        sa.Column("summary", JSONB, nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["arm_id"], ["experiment_arms.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("arm_id", "seed", name="uq_experiment_jobs_arm_seed"),
    )
    op.create_index("ix_experiment_jobs_experiment_id", "experiment_jobs", ["experiment_id"])
    op.create_index("ix_experiment_jobs_arm_id", "experiment_jobs", ["arm_id"])

    op.create_table(
        "experiment_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("suite", sa.String(length=200), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("outcomes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["experiment_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "suite", "metric", name="uq_experiment_results_job_suite_metric"),
    )
    op.create_index("ix_experiment_results_job_id", "experiment_results", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_experiment_results_job_id", table_name="experiment_results")
    op.drop_table("experiment_results")
    op.drop_index("ix_experiment_jobs_arm_id", table_name="experiment_jobs")
    op.drop_index("ix_experiment_jobs_experiment_id", table_name="experiment_jobs")
    op.drop_table("experiment_jobs")
    op.drop_index("ix_experiment_arms_experiment_id", table_name="experiment_arms")
    op.drop_table("experiment_arms")
    op.drop_index("ix_experiments_dataset_id", table_name="experiments")
    op.drop_table("experiments")
    # Not batch mode (see upgrade): SQLite >= 3.35 and PostgreSQL drop a column in place.
    op.execute("ALTER TABLE datasets DROP COLUMN experiment_base_model")
