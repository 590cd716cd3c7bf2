"""The workers table: one heartbeat row per ``meshforge worker`` process.

Revision ID: 0002_workers
Revises: 0001_jobs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_workers"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``workers``."""
    op.create_table(
        "workers",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("backends", sa.Text, nullable=False),
        sa.Column("free_vram_bytes", sa.BigInteger),
        sa.Column("total_vram_bytes", sa.BigInteger),
        sa.Column("accepting", sa.Integer, nullable=False, server_default="1"),
        sa.Column("current_job", sa.Text),
        sa.Column("jobs_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("jobs_failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("redeliveries_dropped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    """Drop ``workers``."""
    op.drop_table("workers")
