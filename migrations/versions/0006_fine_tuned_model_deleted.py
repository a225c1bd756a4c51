"""fine-tuned model deleted: ``DELETE /v1/models/{fine_tuned_model}`` deletes the model and keeps the job, as
at OpenAI; ``model_deleted_at`` says when (the job then has no fine_tuned_model and serves no requests).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 09:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("model_deleted_at", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("model_deleted_at")
