"""Operations: business-key index, pause switches, bulk replays, alerts, retention columns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "bulk_replays",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("filter", JSON, nullable=False),
        sa.Column("mode", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("replayed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("cutoff", sa.DateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_replays")),
    )
    with op.batch_alter_table("replays") as batch:
        batch.add_column(sa.Column("previous_payload", JSON, nullable=True))
        batch.add_column(sa.Column("from_status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("bulk_id", sa.BigInteger(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_replays_bulk_id_bulk_replays"), "bulk_replays", ["bulk_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index(op.f("ix_replays_bulk_id"), ["bulk_id"])
    with op.batch_alter_table("events") as batch:
        batch.alter_column("payload", existing_type=JSON, nullable=True)
        batch.add_column(sa.Column("payload_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("purged_at", sa.DateTime(), nullable=True))
        batch.create_index("ix_events_finished_at", ["finished_at"])
        batch.create_index("ix_events_event_type_status", ["event_type", "status"])
    op.create_table(
        "event_keys",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_event_keys_event_id_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_keys")),
        sa.UniqueConstraint("event_id", "value", name=op.f("uq_event_keys_event_id_value")),
    )
    op.create_index("ix_event_keys_value", "event_keys", ["value"])
    op.create_table(
        "controls",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("changed_by", sa.String(length=128), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name=op.f("pk_controls")),
    )
    op.create_table(
        "alerts",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("detail", JSON, nullable=True),
        sa.Column("first_fired_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("last_notified_at", sa.DateTime(), nullable=True),
        sa.Column("notified_state", sa.String(length=16), nullable=True),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_alerts")),
    )
    op.create_index(op.f("ix_dead_letters_created_at"), "dead_letters", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_dead_letters_created_at"), table_name="dead_letters")
    op.drop_table("alerts")
    op.drop_table("controls")
    op.drop_index("ix_event_keys_value", table_name="event_keys")
    op.drop_table("event_keys")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_event_type_status")
        batch.drop_index("ix_events_finished_at")
        batch.drop_column("purged_at")
        batch.drop_column("payload_hash")
    with op.batch_alter_table("replays") as batch:
        batch.drop_index(op.f("ix_replays_bulk_id"))
        batch.drop_constraint(op.f("fk_replays_bulk_id_bulk_replays"), type_="foreignkey")
        batch.drop_column("bulk_id")
        batch.drop_column("from_status")
        batch.drop_column("previous_payload")
    op.drop_table("bulk_replays")
