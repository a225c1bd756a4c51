"""inference workers: the workers table also lists inference processes; ``kind`` tells them from trainers
(rows written before are trainers), ``address`` is where the API reaches an inference process, ``models`` the
base models it holds (a JSON list) and ``load`` its requests in hand, so the API can route to one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="trainer"))
        batch.add_column(sa.Column("address", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("models", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                                   nullable=True))
        batch.add_column(sa.Column("load", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("load")
        batch.drop_column("models")
        batch.drop_column("address")
        batch.drop_column("kind")
