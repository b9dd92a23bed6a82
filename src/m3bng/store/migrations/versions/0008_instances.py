"""BNG instances: events, cross-references and BNG state keyed per instance (instances.py).

Existing rows move to the instance ``default`` (the single-instance settings), so an
installation upgrading keeps its keys: the unique keys gain ``instance`` as their first column.
The initial load's digests (``sync_records``, whose primary key gains it) and runs, and
reconciliation's runs, are per instance too (``m3bng sync|reconcile --instance``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table → (old unique keys, new unique keys), each a tuple of columns
KEYS: dict[str, tuple[list[tuple[str, ...]], list[tuple[str, ...]]]] = {
    "events": ([("source", "external_id")], [("instance", "source", "external_id")]),
    "xrefs": (
        [("entity", "bng_id"), ("entity", "m3_key")],
        [("instance", "entity", "bng_id"), ("instance", "entity", "m3_key")],
    ),
    "bng_state": ([("entity", "bng_id")], [("instance", "entity", "bng_id")]),
}


# tables that only gain the column (the runs of ``m3bng sync`` and ``m3bng reconcile``)
RUNS = ("sync_runs", "reconcile_runs")


def _name(table: str, columns: tuple[str, ...]) -> str:
    return f"uq_{table}_{'_'.join(columns)}"


def _instance_column() -> sa.Column[str]:
    return sa.Column("instance", sa.String(length=32), server_default="default", nullable=False)


def upgrade() -> None:
    for table, (old, new) in KEYS.items():
        with op.batch_alter_table(table) as batch:
            batch.add_column(_instance_column())
            for columns in old:
                batch.drop_constraint(op.f(_name(table, columns)), type_="unique")
            for columns in new:
                batch.create_unique_constraint(op.f(_name(table, columns)), list(columns))
    for table in RUNS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(_instance_column())
    with op.batch_alter_table("sync_records") as batch:
        batch.add_column(_instance_column())
        batch.drop_constraint(op.f("pk_sync_records"), type_="primary")
        batch.create_primary_key(op.f("pk_sync_records"), ["instance", "entity", "m3_key"])
    # The claim reads each instance's head of line in its order (store/queue.py): with ``id`` in
    # the index no sort is needed, so a claim stops after the rows it takes even when the
    # planner's statistics are those of an empty table (a flood before autoanalyze ran).
    op.create_index("ix_events_instance_due", "events", ["instance", "status", "next_attempt_at", "id"])
    op.drop_index("ix_events_due", table_name="events")
    op.create_index("ix_events_due", "events", ["status", "next_attempt_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_due", table_name="events")
    op.create_index("ix_events_due", "events", ["status", "next_attempt_at"])
    op.drop_index("ix_events_instance_due", table_name="events")
    # Only the instance default's digests fit the old key (other instances' loads start afresh).
    op.execute(sa.text("DELETE FROM sync_records WHERE instance <> 'default'"))
    with op.batch_alter_table("sync_records") as batch:
        batch.drop_constraint(op.f("pk_sync_records"), type_="primary")
        batch.create_primary_key(op.f("pk_sync_records"), ["entity", "m3_key"])
        batch.drop_column("instance")
    for table in reversed(RUNS):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("instance")
    for table, (old, new) in KEYS.items():
        with op.batch_alter_table(table) as batch:
            for columns in new:
                batch.drop_constraint(op.f(_name(table, columns)), type_="unique")
            for columns in old:
                batch.create_unique_constraint(op.f(_name(table, columns)), list(columns))
            batch.drop_column("instance")
