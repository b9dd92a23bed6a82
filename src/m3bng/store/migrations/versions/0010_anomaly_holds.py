"""Anomaly holds: the order history the anomaly rules compare against (what was entered in M3,
per line and per order) and the findings of those rules (flags and holds, with their figures),
for issue 20's anomaly holds (flows/runtime/anomalies.py). Events gain the status ``held``,
which is a value of the existing ``status`` column: no change to ``events``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "order_history",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("instance", sa.String(length=32), server_default="default", nullable=False),
        sa.Column("flow", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("order_id", sa.String(length=255), nullable=False),
        sa.Column("customer", sa.String(length=255), nullable=False),
        sa.Column("sku", sa.String(length=255), nullable=True),
        sa.Column("quantity", sa.Float(), nullable=False),
        sa.Column("unit_price", sa.Float(), nullable=True),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_history")),
    )
    op.create_index("ix_order_history_sku", "order_history", ["flow", "instance", "sku", "id"])
    op.create_index(
        "ix_order_history_customer", "order_history", ["flow", "instance", "customer", "sku", "id"]
    )
    op.create_index("ix_order_history_at", "order_history", ["at"])
    op.create_table(
        "anomaly_findings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("flow", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("detail", Json, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.Column("resolution", sa.String(length=16), nullable=True),
        sa.Column("resolved_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_anomaly_findings_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anomaly_findings")),
    )
    op.create_index("ix_anomaly_findings_event_id", "anomaly_findings", ["event_id"])
    op.create_index(
        "ix_anomaly_findings_action_resolved", "anomaly_findings", ["action", "resolved_at", "id"]
    )


def downgrade() -> None:
    op.drop_table("anomaly_findings")
    op.drop_table("order_history")
