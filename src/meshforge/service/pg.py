"""The job ledger on PostgreSQL: a connection adapter with the ``sqlite3`` surface :class:`~.storage.JobStore`
uses, and the schema migrations (Alembic, ``meshforge/service/migrations``).

:class:`~.storage.JobStore` writes its SQL once, in the dialect both engines share. This module runs that
SQL on PostgreSQL (psycopg 3, client-side parameter binding so ``?``-style parameters need no types) with
three rewrites: ``?`` → ``%s``, the two-argument scalar ``MAX(a, b)`` → ``GREATEST(a, b)``, and SQLite's
``BEGIN IMMEDIATE`` (one writer at a time) → ``BEGIN`` plus ``LOCK TABLE jobs IN EXCLUSIVE MODE`` (readers
go on; other writers wait for the commit), so every transaction keeps the meaning it has on SQLite.

The schema is created and upgraded with Alembic (``alembic upgrade head`` under a PostgreSQL advisory lock,
so processes starting together migrate once).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

#: the PostgreSQL URL schemes accepted in ``MESHFORGE_SERVICE_DATABASE_URL``
PG_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x6D657368  # "mesh": the advisory lock taken while migrating


def is_postgres_url(url: str | None) -> bool:
    """Whether ``url`` names a PostgreSQL database (``postgresql://``, ``postgres://``, ``postgresql+psycopg://``)."""
    return bool(url) and str(url).startswith(PG_SCHEMES)


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg) takes it: ``postgresql://…`` without a SQLAlchemy driver suffix."""
    for scheme in PG_SCHEMES:
        if url.startswith(scheme):
            return "postgresql://" + url[len(scheme) :]
    raise ValueError("not a PostgreSQL URL")


def sqlalchemy_url(url: str) -> str:
    """The URL as SQLAlchemy takes it with the psycopg 3 driver (``postgresql+psycopg://…``)."""
    return "postgresql+psycopg://" + libpq_url(url)[len("postgresql://") :]


_PARAM = re.compile(r"\?")
_SCALAR_MAX = re.compile(r"\bMAX\((?=[^()]*(?:\([^()]*\))?[^()]*,)")


def translate(sql: str) -> str:
    """SQLite-flavoured SQL of :class:`~.storage.JobStore` as PostgreSQL runs it (see the module docstring)."""
    sql = sql.replace("%", "%%")
    sql = _SCALAR_MAX.sub("GREATEST(", sql)
    return _PARAM.sub("%s", sql)


class Row(tuple):
    """A result row readable by position and by column name, like :class:`sqlite3.Row`."""

    _names: tuple[str, ...] = ()

    def __new__(cls, names: tuple[str, ...], values: Any) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def keys(self) -> list[str]:
        """The column names."""
        return list(self._names)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)


def _row_factory(cursor: Any) -> Any:
    names = tuple(c.name for c in cursor.description or ())
    return lambda values: Row(names, values)


class PgConnection:
    """One PostgreSQL connection with the part of :class:`sqlite3.Connection`'s interface the ledger uses
    (``execute`` → a cursor with ``fetchone``/``fetchall``/``rowcount``/iteration, ``close``).

    Autocommit, like the ledger's SQLite connections (``isolation_level=None``): each statement commits
    unless it runs between ``BEGIN IMMEDIATE`` and ``COMMIT``/``ROLLBACK``.
    """

    def __init__(self, url: str) -> None:
        import psycopg

        self.raw = psycopg.connect(libpq_url(url), autocommit=True, cursor_factory=psycopg.ClientCursor)

    def execute(self, sql: str, args: Any = ()) -> Any:
        """Run one statement (SQLite-flavoured, see :func:`translate`) and return its cursor."""
        cur = self.raw.cursor(row_factory=_row_factory)
        if sql.strip().upper() == "BEGIN IMMEDIATE":
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")
            return cur
        cur.execute(translate(sql), tuple(args) if args else None)
        return cur

    def close(self) -> None:
        """Close the connection."""
        self.raw.close()


def ledger_errors() -> tuple[type[BaseException], ...]:
    """Exception types a ledger operation raises when the database is busy or unreachable (sqlite3's, and
    psycopg's when it is installed)."""
    import sqlite3

    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


def migrate(url: str) -> None:
    """Create or upgrade the ledger's schema in the PostgreSQL database at ``url`` to the newest Alembic
    revision (``meshforge/service/migrations/versions``), holding an advisory lock meanwhile.

    Raises:
        ImportError: SQLAlchemy or Alembic is missing (the ``scale`` extra).
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            try:
                cfg = Config()
                cfg.set_main_option("script_location", str(_MIGRATIONS))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()
