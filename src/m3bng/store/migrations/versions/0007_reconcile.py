"""Reconciliation runs and their findings (m3bng reconcile).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "reconcile_runs",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("fix", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconcile_runs")),
    )
    op.create_index(op.f("ix_reconcile_runs_kind"), "reconcile_runs", ["kind"])
    op.create_table(
        "reconcile_findings",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", BIG_ID, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("finding", sa.String(length=32), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconcile_runs.id"],
            name=op.f("fk_reconcile_findings_run_id_reconcile_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconcile_findings")),
    )
    op.create_index(op.f("ix_reconcile_findings_run_id"), "reconcile_findings", ["run_id"])
    op.create_index(op.f("ix_reconcile_findings_key"), "reconcile_findings", ["key"])


def downgrade() -> None:
    op.drop_index(op.f("ix_reconcile_findings_key"), table_name="reconcile_findings")
    op.drop_index(op.f("ix_reconcile_findings_run_id"), table_name="reconcile_findings")
    op.drop_table("reconcile_findings")
    op.drop_index(op.f("ix_reconcile_runs_kind"), table_name="reconcile_runs")
    op.drop_table("reconcile_runs")
