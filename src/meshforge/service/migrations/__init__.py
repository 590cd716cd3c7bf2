"""Alembic migrations of the PostgreSQL job ledger (run by :func:`meshforge.service.pg.migrate`)."""
