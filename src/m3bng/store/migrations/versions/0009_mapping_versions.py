"""Mapping versions: each flow's mapping YAML, numbered, with its state (draft, live,
superseded) and source (file, studio, bundle), and the conflicts start-up found between a
changed mapping file and a version published from the studio (ops/mapping_versions.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LIVE = sa.text("state = 'live'")


def upgrade() -> None:
    op.create_table(
        "mapping_versions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("flow", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("file_hash", sa.String(length=64), nullable=True),
        sa.Column("based_on", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mapping_versions")),
        sa.UniqueConstraint("flow", "version", name=op.f("uq_mapping_versions_flow_version")),
    )
    op.create_index(op.f("ix_mapping_versions_content_hash"), "mapping_versions", ["content_hash"])
    op.create_index(op.f("ix_mapping_versions_published_at"), "mapping_versions", ["published_at"])
    # One live version per flow: concurrent publications or start-up imports cannot both win.
    op.create_index(
        "ux_mapping_versions_live",
        "mapping_versions",
        ["flow"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_table(
        "mapping_conflicts",
        sa.Column("flow", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("file_hash", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("live_version", sa.Integer(), nullable=False),
        sa.Column("file_version", sa.Integer(), nullable=True),
        sa.Column("detected_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("flow", name=op.f("pk_mapping_conflicts")),
    )


def downgrade() -> None:
    op.drop_table("mapping_conflicts")
    op.drop_index("ux_mapping_versions_live", table_name="mapping_versions")
    op.drop_index(op.f("ix_mapping_versions_published_at"), table_name="mapping_versions")
    op.drop_index(op.f("ix_mapping_versions_content_hash"), table_name="mapping_versions")
    op.drop_table("mapping_versions")
