"""ION messages, document versions (staleness), BNG state (echo suppression), inventory
snapshots and scheduler leases (poller).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ion_messages",
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_ion_messages_event_id_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_ion_messages")),
    )
    op.create_index(op.f("ix_ion_messages_event_id"), "ion_messages", ["event_id"])
    op.create_table(
        "document_versions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("noun", sa.String(length=64), nullable=False),
        sa.Column("document_key", sa.String(length=255), nullable=False),
        sa.Column("variation_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=True),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_document_versions_event_id_events"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_versions")),
        sa.UniqueConstraint("noun", "document_key", name=op.f("uq_document_versions_noun_document_key")),
    )
    op.create_table(
        "bng_state",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("bng_id", sa.String(length=255), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_bng_state_event_id_events"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bng_state")),
        sa.UniqueConstraint("entity", "bng_id", name=op.f("uq_bng_state_entity_bng_id")),
    )
    op.create_table(
        "inventory_snapshots",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("warehouse", sa.String(length=16), nullable=False),
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.Column("balance", JSON, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("polled_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory_snapshots")),
        sa.UniqueConstraint("warehouse", "item", name=op.f("uq_inventory_snapshots_warehouse_item")),
    )
    op.create_table(
        "scheduler_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("last_run_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_leases")),
    )


def downgrade() -> None:
    op.drop_table("scheduler_leases")
    op.drop_table("inventory_snapshots")
    op.drop_table("bng_state")
    op.drop_table("document_versions")
    op.drop_index(op.f("ix_ion_messages_event_id"), table_name="ion_messages")
    op.drop_table("ion_messages")
