"""jobs keyset index: (owner_id, created_at, id), so any page of an owner's list is one index range scan.

The list is ordered newest first by (created_at, id) and a page starts after the previous page's last
(created_at, id). With the old (owner_id, created_at) index Postgres sorted each page on id and filtered
every newer row, so a page halfway down 10,000 jobs read 5,000 rows; this index makes every page cost the
same as the first.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 16:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.create_index("ix_jobs_owner_created_id", ["owner_id", "created_at", "id"])
        batch.drop_index("ix_jobs_owner_created")  # a prefix of the new one: no query needs it


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.create_index("ix_jobs_owner_created", ["owner_id", "created_at"])
        batch.drop_index("ix_jobs_owner_created_id")
