"""Cache of M3 field metadata (MRS001MI LstFields) per program, transaction and direction.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "m3_field_metadata",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("program", sa.String(length=16), nullable=False),
        sa.Column("transaction", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=1), nullable=False),
        sa.Column(
            "fields",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("fetched_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_m3_field_metadata")),
        sa.UniqueConstraint(
            "program",
            "transaction",
            "direction",
            name=op.f("uq_m3_field_metadata_program_transaction_direction"),
        ),
    )


def downgrade() -> None:
    op.drop_table("m3_field_metadata")
