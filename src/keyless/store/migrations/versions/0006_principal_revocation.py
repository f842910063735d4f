"""users and service principals: account_enabled; users: tokens_valid_from, the cut-off
`keyless ad user revoke-sessions` sets

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("tokens_valid_from", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("account_enabled", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("service_principals") as batch:
        batch.add_column(
            sa.Column("account_enabled", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("service_principals") as batch:
        batch.drop_column("account_enabled")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("account_enabled")
        batch.drop_column("tokens_valid_from")
