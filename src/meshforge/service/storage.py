"""The job ledger (SQLite in WAL mode under the service's data dir, or PostgreSQL when
``database_url`` is a ``postgresql://`` URL, see :mod:`~meshforge.service.pg`) and the artifact folders.

::

    <data_dir>/jobs.sqlite3          one row per job (state, options, progress, report, timings)
    <data_dir>/jobs/<id>/input/...   the upload, named after its original file name
    <data_dir>/jobs/<id>/result.glb  the asset; result.obj.zip, result.ply.ply, result.stl.stl beside it
                                     (written when the job ends; preview.png is rendered on first request)
    <data_dir>/jobs/<id>/raw.mfraw   generate: the raw reconstruction (:mod:`meshforge.raw`), the input of
                                     the job's exports
    <data_dir>/jobs/<id>/cutout.png  generate: the prepared picture the backend saw (RGBA, alpha = mask)

An export (kind ``export``) is a job like the others whose ``parent_id`` is the generate job it re-finishes;
its input is the parent's ``raw.mfraw`` (:meth:`JobStore.input_path`); it is deleted with its parent, and
the parent's expiry is pushed back to the export's (at its submission and when it finishes), so a parent
outlives its exports' results (a parent that expires anyway takes its exports with it).

Earlier versions kept a pickled ``asset.pkl`` instead of the raw and the other formats: such folders are
still served (their GLB, a format already made, a preview) but ``asset.pkl`` is never read.

States move ``queued → running → succeeded | failed | canceled`` (and ``queued → canceled``). Every
change is one SQL statement or one ``BEGIN IMMEDIATE`` transaction, so several threads (HTTP handlers,
workers) and even several processes can share the ledger. Writes made while running a job are guarded
by the attempt number and the lease owner, so a job taken away from a worker (by the watchdog, or after
its lease expired) ignores whatever that worker writes later.

Leases: a claimed (``running``) job carries its claimer's name in ``worker`` (the lease owner, unique per
worker instance) and ``lease_expires``; the worker renews the lease with :meth:`JobStore.heartbeat` while
the job runs. :meth:`JobStore.recover` puts back in the queue only running jobs whose lease expired (their
process died or lost the ledger), so any number of processes may share a data dir and start or recover
at any time: a job is run by one lease holder at a time. The lease lives in the ledger, not in memory, so
workers on other machines (a task queue sharing the ledger) follow the same protocol; their clocks must
agree to well within the lease time.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT,
    request_hash TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    input_name TEXT NOT NULL,
    input_file TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    input_bytes INTEGER NOT NULL,
    input_media_type TEXT NOT NULL,
    options TEXT NOT NULL,
    effective_options TEXT,
    backend TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    expires_at REAL,
    deadline REAL,
    stage TEXT,
    percent REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    degraded INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    error_code TEXT,
    error_message TEXT,
    report TEXT,
    timings TEXT,
    lease_expires REAL,
    parent_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_fingerprint ON jobs(fingerprint, owner, state);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires_at);
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    device TEXT NOT NULL,
    queue TEXT NOT NULL,
    backends TEXT NOT NULL,
    free_vram_bytes INTEGER,
    total_vram_bytes INTEGER,
    accepting INTEGER NOT NULL DEFAULT 1,
    current_job TEXT,
    jobs_done INTEGER NOT NULL DEFAULT 0,
    jobs_failed INTEGER NOT NULL DEFAULT 0,
    redeliveries_dropped INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
"""


@dataclass
class WorkerRow:
    """One ``meshforge worker`` process as it last reported itself (its heartbeat row in the ledger).

    ``free_vram_bytes``/``total_vram_bytes`` are None on a CPU worker; ``accepting`` is False while its
    free VRAM is below ``min_free_vram_bytes`` (it takes no new job then); ``redeliveries_dropped`` counts
    messages it dropped because the ledger showed another worker's live lease on their job.
    """

    name: str
    host: str
    device: str
    queue: str
    backends: list[str]
    free_vram_bytes: int | None
    total_vram_bytes: int | None
    accepting: bool
    current_job: str | None
    jobs_done: int
    jobs_failed: int
    redeliveries_dropped: int
    started_at: float
    last_seen: float

    @classmethod
    def from_sql(cls, row: Any) -> WorkerRow:
        """Decode a ``SELECT *`` row of ``workers``."""
        d = dict(row)
        d["backends"] = json.loads(d["backends"] or "[]")
        d["accepting"] = bool(d["accepting"])
        return cls(**d)


#: columns added after the first release: ``(name, SQL type)``; added to older ledgers when opened
_ADDED_COLUMNS: tuple[tuple[str, str], ...] = (("lease_expires", "REAL"), ("parent_id", "TEXT"))


@dataclass
class JobRow:
    """One job as stored. Times are POSIX seconds; JSON columns are decoded."""

    seq: int
    id: str
    kind: str
    state: str
    owner: str
    idempotency_key: str | None
    request_hash: str
    fingerprint: str
    input_name: str
    input_file: str
    input_sha256: str
    input_bytes: int
    input_media_type: str
    options: dict[str, Any]
    effective_options: dict[str, Any] | None
    backend: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    expires_at: float | None
    deadline: float | None
    stage: str | None
    percent: float
    attempts: int
    degraded: bool
    cancel_requested: bool
    worker: str | None
    error_code: str | None
    error_message: str | None
    report: dict[str, Any] | None
    timings: dict[str, Any] = field(default_factory=dict)
    lease_expires: float | None = None
    parent_id: str | None = None

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> JobRow:
        """Decode a ``SELECT *`` row."""
        d = dict(row)
        for key in ("options", "effective_options", "report", "timings"):
            d[key] = json.loads(d[key]) if d[key] else ({} if key in ("options", "timings") else None)
        d["degraded"] = bool(d["degraded"])
        d["cancel_requested"] = bool(d["cancel_requested"])
        return cls(**d)

    @property
    def terminal(self) -> bool:
        """Whether the job has finished (succeeded, failed or canceled)."""
        return self.state in TERMINAL


@dataclass(frozen=True)
class NewJob:
    """What a submission stores (see :meth:`JobStore.create`)."""

    id: str
    kind: str
    owner: str
    idempotency_key: str | None
    request_hash: str
    fingerprint: str
    input_name: str
    input_file: str
    input_sha256: str
    input_bytes: int
    input_media_type: str
    options: dict[str, Any]
    backend: str | None
    parent_id: str | None = None


@dataclass(frozen=True)
class CreateOutcome:
    """The answer of :meth:`JobStore.create`.

    ``how`` is ``"created"`` (a new queued job), ``"replayed"`` (the Idempotency-Key's job), ``"cached"``
    (an existing job with the same fingerprint), ``"key_mismatch"`` (the key belongs to another request;
    ``job`` is that job), ``"queue_full"`` (``job`` is None) or ``"parent_gone"`` (an export whose parent was
    deleted meanwhile; ``job`` is None).
    """

    how: str
    job: JobRow | None
    queue_depth: int = 0


def new_lease_owner(name: str) -> str:
    """A lease owner name unique to one worker instance: ``<name>@<host>:<pid>:<random>``."""
    return f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


#: ``errno`` values that mean the filesystem has no room left (no space, or the user's quota is used up)
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_storage_full(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) means the disk is full.

    Recognised: :class:`OSError` with ``errno`` ``ENOSPC`` ("No space left on device") or ``EDQUOT``
    (quota exceeded), and SQLite's ``SQLITE_FULL`` ("database or disk is full", ``sqlite3.Error`` with
    ``sqlite_errorcode`` 13, see https://www.sqlite.org/rescode.html#full).
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        if isinstance(e, sqlite3.Error) and getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        e = e.__cause__ or e.__context__
    return False


class DataDirError(Exception):
    """The data dir cannot be used (not creatable, not writable); the message is one line."""


def check_data_dir(data_dir: Path) -> None:
    """Make sure the service can write in ``data_dir`` (created when missing) before it starts.

    Creates the folder and its ``jobs`` folder, then writes and removes a small file in it.

    Raises:
        DataDirError: one line naming the folder, the reason (``strerror``: read-only file system, not a
            directory, permission denied, no space left) and what to do.
    """
    probe = Path(data_dir) / f".write-check-{os.getpid()}"
    try:
        (Path(data_dir) / "jobs").mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as fh:
            fh.write(b"meshforge")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        reason = exc.strerror or type(exc).__name__
        raise DataDirError(
            f"data dir {data_dir}: cannot write there ({reason}); give a writable folder with --data-dir "
            "or MESHFORGE_SERVICE_DATA_DIR"
        ) from None


def new_job_id() -> str:
    """A new random job id (32 hex digits)."""
    return uuid.uuid4().hex


def encode_cursor(seq: int) -> str:
    """An opaque paging cursor standing for the position after job ``seq``."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The sequence number inside a cursor from :func:`encode_cursor`.

    Raises:
        ValueError: not a cursor this module made.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("malformed cursor") from exc
    if not text.startswith("s") or not text[1:].isdigit():
        raise ValueError("malformed cursor")
    return int(text[1:])


class JobStore:
    """The job ledger and artifact folders under ``data_dir``.

    Thread-safe: every thread gets its own SQLite connection. ``notify(job_id)`` is called after every
    change to a job (from whichever thread made it) so listeners such as event streams can wake up.

    Args:
        data_dir: the service's data folder (created when missing).
        notify: change listener (optional).
    """

    def __init__(
        self,
        data_dir: Path,
        notify: Callable[[str], None] | None = None,
        *,
        database_url: str | None = None,
        storage_url: str | None = None,
    ) -> None:
        from .artifacts import open_artifacts
        from .pg import is_postgres_url, migrate

        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / "jobs"
        self.db_path = self.data_dir / "jobs.sqlite3"
        self.database_url = database_url if is_postgres_url(database_url) else None
        self.notify: Callable[[str], None] = notify or (lambda _id: None)
        #: the object store holding the job files when ``storage_url`` is ``s3://…`` (the job folders are
        #: then local working copies), else None
        self.artifacts = open_artifacts(storage_url)
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        if self.database_url is not None:
            migrate(self.database_url)
        else:
            self._conn().executescript(_SCHEMA)
            self._migrate()

    @property
    def engine(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return "postgresql" if self.database_url is not None else "sqlite"

    def ping(self) -> None:
        """Run ``SELECT 1`` on the ledger (raises the driver's error when it cannot be reached)."""
        self._conn().execute("SELECT 1").fetchone()

    def _migrate(self) -> None:
        """Add the columns a ledger made by an older version lacks (one transaction, safe to race)."""
        with self._tx() as c:
            have = {str(r[1]) for r in c.execute("PRAGMA table_info(jobs)")}
            for name, sql_type in _ADDED_COLUMNS:
                if name not in have:
                    c.execute(f"ALTER TABLE jobs ADD COLUMN {name} {sql_type}")
            c.execute("CREATE INDEX IF NOT EXISTS jobs_parent ON jobs(parent_id) WHERE parent_id IS NOT NULL")

    # -- connections --------------------------------------------------------------------------------
    def _conn(self) -> Any:
        conn: Any = getattr(self._local, "conn", None)
        if conn is None and self.database_url is not None:
            from .pg import PgConnection

            conn = PgConnection(self.database_url)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        elif conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this store opened (call once no thread uses it any more)."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except Exception:  # pragma: no cover - sqlite3.Error, psycopg.Error
                pass
        self._local = threading.local()

    def close_thread(self) -> None:
        """Close the calling thread's connection (a short-lived thread, such as a heartbeat, ends)."""
        conn: Any = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._conns_lock:
            if conn in self._conns:
                self._conns.remove(conn)
        conn.close()

    # -- paths --------------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        """The artifact folder of a job (``<data_dir>/jobs/<id>``)."""
        if not job_id.isalnum():
            raise ValueError("bad job id")
        return self.jobs_dir / job_id

    def input_path(self, job: JobRow) -> Path:
        """The stored upload of a job; an export's input is a file of its parent's folder (the raw)."""
        return self.job_dir(job.parent_id or job.id) / job.input_file

    def local_file(self, job_id: str, name: str) -> Path | None:
        """The job's file ``name`` in its local folder, fetched from the object store first when it is
        missing there (:attr:`artifacts`); None when neither has it."""
        path = self.job_dir(job_id) / name
        if path.is_file():
            return path
        if self.artifacts is not None and self.artifacts.fetch(job_id, name, path):
            return path
        return None

    def free_bytes(self) -> int:
        """Free space on the data dir's filesystem, in bytes (for an unprivileged process, like ``df``)."""
        return int(shutil.disk_usage(self.data_dir).free)

    def remove_outputs(self, job_id: str, keep: str) -> list[str]:
        """Delete everything in a job's folder except ``keep`` (its input folder): results, re-exports,
        previews, and temporary files a failed write may have left.

        Returns:
            The names removed.
        """
        folder = self.job_dir(job_id)
        removed = []
        for p in folder.iterdir() if folder.is_dir() else ():
            if p.name == keep:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
        if self.artifacts is not None:
            removed += [n for n in self.artifacts.delete(job_id, keep=keep) if n not in removed]
        return removed

    # -- submission ---------------------------------------------------------------------------------
    def create(self, new: NewJob, *, max_queue: int, ttl_s: float) -> CreateOutcome:
        """Queue a job unless an equivalent one exists, in one transaction.

        Order of checks: the Idempotency-Key (same key and same request → that job, ``"replayed"``; same
        key, other request → ``"key_mismatch"``), then the fingerprint (a succeeded, not degraded, job or
        one queued or running with the same fingerprint and owner → ``"cached"``; a succeeded one gets its
        expiry extended by ``ttl_s``), then the queue limit (``"queue_full"`` when ``max_queue`` jobs are
        queued), else a new queued row (``"created"``).

        The upload must already be stored in :meth:`job_dir` of ``new.id`` (a worker may start the job as
        soon as this commits).
        """
        now = time.time()
        with self._tx() as c:
            if new.idempotency_key is not None:
                row = c.execute(
                    "SELECT * FROM jobs WHERE owner=? AND idempotency_key=?", (new.owner, new.idempotency_key)
                ).fetchone()
                if row is not None:
                    job = JobRow.from_sql(row)
                    return CreateOutcome("replayed" if job.request_hash == new.request_hash else "key_mismatch", job)
            row = c.execute(
                "SELECT * FROM jobs WHERE fingerprint=? AND owner=? AND degraded=0 "
                "AND state IN ('succeeded','running','queued') ORDER BY state='succeeded' DESC, seq DESC LIMIT 1",
                (new.fingerprint, new.owner),
            ).fetchone()
            if row is not None:
                job = JobRow.from_sql(row)
                if job.state == "succeeded":
                    c.execute(
                        "UPDATE jobs SET expires_at=? WHERE seq=?", (max(job.expires_at or 0, now + ttl_s), job.seq)
                    )
                    job.expires_at = max(job.expires_at or 0, now + ttl_s)
                return CreateOutcome("cached", job)
            depth = int(c.execute("SELECT COUNT(*) FROM jobs WHERE state='queued'").fetchone()[0])
            if depth >= max_queue:
                return CreateOutcome("queue_full", None, depth)
            parent = new.parent_id
            if parent is not None:
                # the parent's raw is the export's input: it lives at least ``ttl_s`` from now
                cur = c.execute(
                    "UPDATE jobs SET expires_at=MAX(COALESCE(expires_at, 0), ?) WHERE id=?", (now + ttl_s, parent)
                )
                if cur.rowcount != 1:
                    return CreateOutcome("parent_gone", None, depth)
            c.execute(
                "INSERT INTO jobs (id, kind, state, owner, idempotency_key, request_hash, fingerprint, input_name, "
                "input_file, input_sha256, input_bytes, input_media_type, options, backend, created_at, parent_id) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.id,
                    new.kind,
                    new.owner,
                    new.idempotency_key,
                    new.request_hash,
                    new.fingerprint,
                    new.input_name,
                    new.input_file,
                    new.input_sha256,
                    new.input_bytes,
                    new.input_media_type,
                    json.dumps(new.options, sort_keys=True),
                    new.backend,
                    now,
                    new.parent_id,
                ),
            )
            row = c.execute("SELECT * FROM jobs WHERE id=?", (new.id,)).fetchone()
        self.notify(new.id)
        return CreateOutcome("created", JobRow.from_sql(row), depth + 1)

    # -- reading ------------------------------------------------------------------------------------
    def get(self, job_id: str, owner: str | None = None) -> JobRow | None:
        """The job, or None (also when ``owner`` is given and the job is someone else's)."""
        if owner is None:
            row = self._conn().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        else:
            row = self._conn().execute("SELECT * FROM jobs WHERE id=? AND owner=?", (job_id, owner)).fetchone()
        return JobRow.from_sql(row) if row is not None else None

    def list_jobs(
        self, *, owner: str | None, states: list[str] | None, limit: int, before_seq: int | None
    ) -> tuple[list[JobRow], int | None]:
        """Jobs newest first, ``limit`` at a time.

        Returns:
            ``(rows, next)`` where ``next`` is the ``before_seq`` of the following page (None at the end).
        """
        where: list[str] = []
        args: list[Any] = []
        if owner is not None:
            where.append("owner=?")
            args.append(owner)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if before_seq is not None:
            where.append("seq<?")
            args.append(before_seq)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC LIMIT ?"
        rows = [JobRow.from_sql(r) for r in self._conn().execute(sql, (*args, limit + 1)).fetchall()]
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].seq
        return rows, None

    def exports(self, parent_id: str) -> list[JobRow]:
        """The exports of a job (kind ``export``, ``parent_id`` = it), oldest first."""
        rows = self._conn().execute("SELECT * FROM jobs WHERE parent_id=? ORDER BY seq", (parent_id,)).fetchall()
        return [JobRow.from_sql(r) for r in rows]

    def queue_position(self, job: JobRow) -> int | None:
        """1 for the next job to run; None when the job is not queued."""
        if job.state != "queued":
            return None
        n = self._conn().execute("SELECT COUNT(*) FROM jobs WHERE state='queued' AND seq<?", (job.seq,)).fetchone()[0]
        return int(n) + 1

    def counts(self) -> dict[str, int]:
        """Number of jobs in each state (every state present, 0 when none)."""
        out = dict.fromkeys(STATES, 0)
        for state, n in self._conn().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            out[str(state)] = int(n)
        return out

    # -- running ------------------------------------------------------------------------------------
    def claim(self, worker: str, timeout_s: float, *, lease_s: float, job_id: str | None = None) -> JobRow | None:
        """Move the oldest queued job (or ``job_id`` when queued) to ``running`` under a lease for ``worker``.

        One ``UPDATE … WHERE state='queued'`` statement, so of several claimers (threads or processes)
        exactly one gets a job. Sets ``started_at``, ``deadline = started_at + timeout_s``, the lease
        (``worker``, ``lease_expires = started_at + lease_s``), increments ``attempts``, clears progress.

        Args:
            worker: the lease owner, unique per worker instance (see :func:`new_lease_owner`).
            timeout_s: the job's wall-clock limit, seconds.
            lease_s: how long the lease lasts unless renewed with :meth:`heartbeat`, seconds.
            job_id: claim this job only.

        Returns:
            The claimed job, or None when there is nothing (or ``job_id`` is not queued).
        """
        now = time.time()
        if job_id is None:
            pick = "(SELECT seq FROM jobs WHERE state='queued' ORDER BY seq LIMIT 1)"
            args: tuple[Any, ...] = (now, now + timeout_s, worker, now + lease_s)
        else:
            pick = "(SELECT seq FROM jobs WHERE state='queued' AND id=?)"
            args = (now, now + timeout_s, worker, now + lease_s, job_id)
        # fetchall: step the statement to its end so its implicit transaction commits now
        rows = (
            self._conn()
            .execute(
                "UPDATE jobs SET state='running', started_at=?, deadline=?, worker=?, lease_expires=?, "
                f"attempts=attempts+1, stage=NULL, percent=0 WHERE seq={pick} AND state='queued' RETURNING *",
                args,
            )
            .fetchall()
        )
        if not rows:
            return None
        job = JobRow.from_sql(rows[0])
        self.notify(job.id)
        return job

    def heartbeat(self, job_id: str, attempt: int, worker: str, lease_s: float) -> bool:
        """Renew the lease of a running job held by ``worker`` (attempt ``attempt``) to ``now + lease_s``.

        Returns:
            False when the lease is lost (the job was re-queued, failed by the watchdog, canceled or
            claimed again): the worker must stop running it.
        """
        cur = self._conn().execute(
            "UPDATE jobs SET lease_expires=? WHERE id=? AND attempts=? AND worker=? AND state='running'",
            (time.time() + lease_s, job_id, attempt, worker),
        )
        return cur.rowcount == 1

    def progress(self, job_id: str, attempt: int, stage: str, percent: float) -> bool | None:
        """Record a stage boundary of a running job.

        Returns:
            Whether a cancel was requested; None when the job is no longer this attempt's (canceled,
            failed by the watchdog, re-queued), so the caller should stop.
        """
        rows = (
            self._conn()
            .execute(
                "UPDATE jobs SET stage=?, percent=? WHERE id=? AND attempts=? AND state='running' "
                "RETURNING cancel_requested",
                (stage, percent, job_id, attempt),
            )
            .fetchall()
        )
        self.notify(job_id)
        return bool(rows[0][0]) if rows else None

    def set_degraded(self, job_id: str, attempt: int, effective_options: dict[str, Any]) -> None:
        """Mark a running job as retried with reduced settings."""
        self._conn().execute(
            "UPDATE jobs SET degraded=1, effective_options=? WHERE id=? AND attempts=? AND state='running'",
            (json.dumps(effective_options, sort_keys=True), job_id, attempt),
        )
        self.notify(job_id)

    def finish(
        self,
        job_id: str,
        attempt: int,
        state: str,
        *,
        ttl_s: float,
        error_code: str | None = None,
        error_message: str | None = None,
        report: dict[str, Any] | None = None,
        timings: dict[str, Any] | None = None,
        finished_at: float | None = None,
    ) -> bool:
        """Move a running job of this attempt to a terminal state (expiring ``ttl_s`` after ``finished_at``;
        an export's parent then expires no earlier).

        Returns:
            False when the job was no longer this attempt's (nothing was written).
        """
        assert state in TERMINAL
        now = finished_at if finished_at is not None else time.time()
        conn = self._conn()
        # an export's parent lives as long as the export (deleting or expiring a parent takes its exports)
        conn.execute(
            "UPDATE jobs SET expires_at=MAX(expires_at, ?) "
            "WHERE id=(SELECT parent_id FROM jobs WHERE id=?) AND expires_at IS NOT NULL",
            (now + ttl_s, job_id),
        )
        cur = conn.execute(
            "UPDATE jobs SET state=?, finished_at=?, expires_at=?, error_code=?, error_message=?, report=?, "
            "timings=?, percent=CASE WHEN ?='succeeded' THEN 100 ELSE percent END "
            "WHERE id=? AND attempts=? AND state='running'",
            (
                state,
                now,
                now + ttl_s,
                error_code,
                error_message,
                json.dumps(report, default=str) if report is not None else None,
                json.dumps(timings or {}),
                state,
                job_id,
                attempt,
            ),
        )
        self.notify(job_id)
        return cur.rowcount == 1

    def requeue(self, job_id: str, attempt: int, worker: str | None = None) -> bool:
        """Put a running job back in the queue (graceful shutdown); the attempt does not count.

        Only when it is still attempt ``attempt`` (and, when ``worker`` is given, still under that lease).
        """
        cur = self._conn().execute(
            "UPDATE jobs SET state='queued', stage=NULL, percent=0, started_at=NULL, deadline=NULL, worker=NULL, "
            "lease_expires=NULL, attempts=attempts-1 WHERE id=? AND attempts=? AND state='running' "
            "AND (? IS NULL OR worker=?)",
            (job_id, attempt, worker, worker),
        )
        self.notify(job_id)
        return cur.rowcount == 1

    def cancel(self, job_id: str, owner: str | None, ttl_s: float) -> JobRow | None:
        """Cancel a job: a queued one at once, a running one at its next stage boundary.

        Returns:
            The job after the change (unchanged when it had already finished), or None when unknown.
        """
        now = time.time()
        with self._tx() as c:
            c.execute(
                "UPDATE jobs SET state='canceled', finished_at=?, expires_at=?, error_code='canceled', "
                "error_message='canceled before it started' WHERE id=? AND state='queued'"
                + (" AND owner=?" if owner is not None else ""),
                (now, now + ttl_s, job_id) + ((owner,) if owner is not None else ()),
            )
            c.execute(
                "UPDATE jobs SET cancel_requested=1 WHERE id=? AND state='running'"
                + (" AND owner=?" if owner is not None else ""),
                (job_id,) + ((owner,) if owner is not None else ()),
            )
        self.notify(job_id)
        return self.get(job_id, owner)

    def delete(self, job_id: str, owner: str | None) -> bool:
        """Delete a job in any state with its artifact folder, and its exports with theirs (a worker running
        one of them stops at its next stage boundary: its writes are guarded by the row, which is gone).

        Returns:
            False when there was no such job (of ``owner``, when given).
        """
        with self._tx() as c:
            cur = c.execute(
                "DELETE FROM jobs WHERE id=?" + (" AND owner=?" if owner is not None else ""),
                (job_id,) + ((owner,) if owner is not None else ()),
            )
            if cur.rowcount != 1:
                return False
            children = [r[0] for r in c.execute("DELETE FROM jobs WHERE parent_id=? RETURNING id", (job_id,))]
        for gone in [job_id, *children]:
            self.remove_files(gone)
            self.notify(gone)
        return True

    # -- remote workers (``meshforge worker``) -------------------------------------------------------
    def worker_beat(self, w: WorkerRow) -> None:
        """Insert or replace a worker's heartbeat row."""
        values = dict(vars(w), backends=json.dumps(w.backends), accepting=int(w.accepting))
        cols = list(values)
        with self._tx() as c:
            c.execute("DELETE FROM workers WHERE name=?", (w.name,))
            c.execute(
                f"INSERT INTO workers ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                tuple(values[k] for k in cols),
            )

    def worker_gone(self, name: str) -> None:
        """Remove a worker's row (it stopped cleanly)."""
        self._conn().execute("DELETE FROM workers WHERE name=?", (name,))

    def workers(self, *, seen_after: float = 0.0) -> list[WorkerRow]:
        """Worker rows last seen after ``seen_after`` (POSIX seconds), by name (rows of workers unseen for
        a day are deleted by :meth:`expire`)."""
        rows = self._conn().execute("SELECT * FROM workers WHERE last_seen>? ORDER BY name", (seen_after,))
        return [WorkerRow.from_sql(r) for r in rows.fetchall()]

    def queued_ids(self) -> list[str]:
        """Ids of the queued jobs, oldest first."""
        return [r[0] for r in self._conn().execute("SELECT id FROM jobs WHERE state='queued' ORDER BY seq")]

    def retry(self, job_id: str, owner: str | None) -> JobRow | None:
        """Put a failed or canceled job back in the queue as new (attempts, error, result and degraded flag
        cleared; its options as submitted).

        Returns:
            The job after the change, or None when there is no such job (of ``owner``, when given). A job
            in another state is returned unchanged.
        """
        self._conn().execute(
            "UPDATE jobs SET state='queued', attempts=0, stage=NULL, percent=0, started_at=NULL, finished_at=NULL, "
            "deadline=NULL, worker=NULL, lease_expires=NULL, error_code=NULL, error_message=NULL, report=NULL, "
            "timings=NULL, degraded=0, effective_options=NULL, cancel_requested=0, expires_at=NULL "
            "WHERE id=? AND state IN ('failed','canceled')" + (" AND owner=?" if owner is not None else ""),
            (job_id,) + ((owner,) if owner is not None else ()),
        )
        self.notify(job_id)
        return self.get(job_id, owner)

    # -- recovery and housekeeping ------------------------------------------------------------------
    def recover(self, max_attempts: int, ttl_s: float, now: float | None = None) -> tuple[list[str], list[str]]:
        """Put running jobs whose lease expired (their process died) back in the queue, in their order.

        Jobs whose lease is still valid are left alone: another live process is running them. Jobs that
        were already started ``max_attempts`` times are failed with ``interrupted`` instead. Called at
        startup and periodically (by the watchdog), by every process sharing the ledger.

        Returns:
            ``(requeued ids, failed ids)``.
        """
        now = time.time() if now is None else now
        expired = "state='running' AND (lease_expires IS NULL OR lease_expires<?)"
        # the common case (every second, in every process): nothing to do, and no write lock taken for it
        if (
            not self._conn()
            .execute(
                f"SELECT EXISTS(SELECT 1 FROM jobs WHERE {expired}) OR "
                "EXISTS(SELECT 1 FROM jobs WHERE state='queued' AND cancel_requested=1)",
                (now,),
            )
            .fetchone()[0]
        ):
            return [], []
        with self._tx() as c:
            rows = c.execute(f"SELECT id, attempts FROM jobs WHERE {expired}", (now,)).fetchall()
            requeued = [r[0] for r in rows if r[1] < max_attempts]
            failed = [r[0] for r in rows if r[1] >= max_attempts]
            for job_id in requeued:
                c.execute(
                    "UPDATE jobs SET state='queued', stage=NULL, percent=0, started_at=NULL, deadline=NULL, "
                    "worker=NULL, lease_expires=NULL WHERE id=?",
                    (job_id,),
                )
            for job_id in failed:
                c.execute(
                    "UPDATE jobs SET state='failed', finished_at=?, expires_at=?, error_code='interrupted', "
                    "error_message=?, lease_expires=NULL WHERE id=?",
                    (
                        now,
                        now + ttl_s,
                        f"the job was interrupted {max_attempts} times (server crash or restart)",
                        job_id,
                    ),
                )
            # a cancel requested for a job that was then interrupted: honour it now
            c.execute(
                "UPDATE jobs SET state='canceled', finished_at=?, expires_at=?, error_code='canceled', "
                "error_message='canceled' WHERE state='queued' AND cancel_requested=1",
                (now, now + ttl_s),
            )
        for job_id in requeued + failed:
            self.notify(job_id)
        return requeued, failed

    def overdue(self, now: float | None = None) -> list[JobRow]:
        """Running jobs past their deadline."""
        now = time.time() if now is None else now
        rows = self._conn().execute("SELECT * FROM jobs WHERE state='running' AND deadline<?", (now,)).fetchall()
        return [JobRow.from_sql(r) for r in rows]

    def expire(self, now: float | None = None, limit: int = 500) -> list[str]:
        """Delete finished jobs whose expiry passed, with their artifact folders (and the exports of those,
        whatever their state: their input, the raw, is gone).

        Returns:
            The deleted job ids (at most ``limit`` per call).
        """
        now = time.time() if now is None else now
        conn = self._conn()
        if conn.execute("SELECT EXISTS(SELECT 1 FROM workers WHERE last_seen<?)", (now - 86400,)).fetchone()[0]:
            conn.execute("DELETE FROM workers WHERE last_seen<?", (now - 86400,))  # workers unseen for a day
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM jobs WHERE expires_at IS NOT NULL AND expires_at<? "
                "AND state IN ('succeeded','failed','canceled') LIMIT ?",
                (now, limit),
            )
        ]
        if not ids:
            return []
        with self._tx() as c:
            gone = []
            for i in ids:
                cur = c.execute(
                    "DELETE FROM jobs WHERE id=? AND expires_at<? AND state IN ('succeeded','failed','canceled')",
                    (i, now),
                )
                if cur.rowcount == 1:
                    gone.append(i)
                    gone += [r[0] for r in c.execute("DELETE FROM jobs WHERE parent_id=? RETURNING id", (i,))]
        ids = gone
        for job_id in ids:
            self.remove_files(job_id)
            self.notify(job_id)
        return ids

    def remove_files(self, job_id: str) -> None:
        """Delete a job's folder and, with an object store, its objects."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        if self.artifacts is not None:
            self.artifacts.delete(job_id)

    def remove_orphans(self) -> int:
        """Delete artifact folders that belong to no job (a crash between storing an upload and committing)."""
        known = {r[0] for r in self._conn().execute("SELECT id FROM jobs")}
        n = 0
        for p in self.jobs_dir.iterdir():
            if p.is_dir() and p.name not in known and time.time() - p.stat().st_mtime > 60:
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n
