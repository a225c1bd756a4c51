"""worker pools: jobs remember their pool, estimated memory and worker; workers heartbeat into a table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("pool", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("estimated_memory", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("worker_id", sa.String(length=64), nullable=True))
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=255), nullable=False),
        sa.Column("device_memory", sa.BigInteger(), nullable=True),
        sa.Column("current_job_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("last_seen_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_workers_last_seen_at", "workers", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_workers_last_seen_at", table_name="workers")
    op.drop_table("workers")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("worker_id")
        batch.drop_column("estimated_memory")
        batch.drop_column("pool")
