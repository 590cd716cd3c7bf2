"""The jobs table: the same columns and indexes as the SQLite ledger (``meshforge.service.storage``).

Revision ID: 0001_jobs
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``jobs`` and its indexes."""
    real: sa.Double[float] = sa.Double()
    op.create_table(
        "jobs",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=False, server_default=""),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("input_name", sa.Text, nullable=False),
        sa.Column("input_file", sa.Text, nullable=False),
        sa.Column("input_sha256", sa.Text, nullable=False),
        sa.Column("input_bytes", sa.BigInteger, nullable=False),
        sa.Column("input_media_type", sa.Text, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("effective_options", sa.Text),
        sa.Column("backend", sa.Text),
        sa.Column("created_at", real, nullable=False),
        sa.Column("started_at", real),
        sa.Column("finished_at", real),
        sa.Column("expires_at", real),
        sa.Column("deadline", real),
        sa.Column("stage", sa.Text),
        sa.Column("percent", real, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("degraded", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cancel_requested", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker", sa.Text),
        sa.Column("error_code", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("report", sa.Text),
        sa.Column("timings", sa.Text),
        sa.Column("lease_expires", real),
        sa.Column("parent_id", sa.Text),
    )
    op.create_index(
        "jobs_idempotency",
        "jobs",
        ["owner", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index("jobs_fingerprint", "jobs", ["fingerprint", "owner", "state"])
    op.create_index("jobs_state", "jobs", ["state", "seq"])
    op.create_index("jobs_expiry", "jobs", ["expires_at"])
    op.create_index("jobs_parent", "jobs", ["parent_id"], postgresql_where=sa.text("parent_id IS NOT NULL"))


def downgrade() -> None:
    """Drop ``jobs``."""
    op.drop_table("jobs")
