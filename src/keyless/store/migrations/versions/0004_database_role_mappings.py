"""database role mappings for the token gateway

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "database_role_mappings",
        sa.Column("server_key", sa.String(length=63), nullable=False),
        sa.Column("role_name", sa.String(length=63), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("principal_id", sa.String(length=36), nullable=False),
        sa.Column("principal_type", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("server_key", "role_name"),
    )
    op.create_index(
        op.f("ix_database_role_mappings_principal_id"),
        "database_role_mappings",
        ["principal_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_database_role_mappings_principal_id"), table_name="database_role_mappings"
    )
    op.drop_table("database_role_mappings")
