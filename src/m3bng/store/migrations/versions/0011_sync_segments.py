"""Initial load in key ranges: ``sync_runs.segments``, the chain of key ranges of an M3 list a
load reads side by side (sync_ranges.py), each with its start, its first key, the last key
stored and whether it is done, so a continuing run reads every range on from where it stopped.
A run with no segments (older runs, BNG's list, stock) keeps its single ``cursor``.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("segments", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("segments")
