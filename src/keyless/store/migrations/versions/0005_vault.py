"""vaults and their secrets

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vaults",
        sa.Column("name", sa.String(length=24), nullable=False),
        sa.Column("resource_key", sa.String(length=1024), nullable=False),
        sa.Column("resource_id", sa.String(length=1024), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["resource_key"], ["resources.key"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("resource_key"),
    )
    op.create_table(
        "vault_secrets",
        sa.Column("vault_name", sa.String(length=24), nullable=False),
        sa.Column("name_key", sa.String(length=127), nullable=False),
        sa.Column("name", sa.String(length=127), nullable=False),
        sa.Column("latest_version", sa.String(length=32), nullable=False),
        sa.Column("deleted_at", sa.Float(), nullable=True),
        sa.Column("purge_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["vault_name"], ["vaults.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("vault_name", "name_key"),
    )
    op.create_table(
        "vault_secret_versions",
        sa.Column("vault_name", sa.String(length=24), nullable=False),
        sa.Column("name_key", sa.String(length=127), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("sealed_value", sa.LargeBinary(), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("not_before", sa.Integer(), nullable=True),
        sa.Column("expires", sa.Integer(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vault_name", "name_key"],
            ["vault_secrets.vault_name", "vault_secrets.name_key"],
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("vault_name", "name_key", "version"),
    )


def downgrade() -> None:
    op.drop_table("vault_secret_versions")
    op.drop_table("vault_secrets")
    op.drop_table("vaults")
