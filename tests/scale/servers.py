"""Real PostgreSQL, RabbitMQ, Redis and S3 (moto) servers for the scale-out tests and benchmark.

Each ``*_server()`` context manager starts the Debian package's (or PyPI's, for moto) server in a fresh
temporary folder on a free loopback port, waits until it answers, yields its URL and stops it (SIGTERM,
then SIGKILL) on exit. PostgreSQL refuses to run as root: when the tests run as root, its folder is given
to the ``postgres`` system user (created by the Debian package) and its programs run as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path | None = None) -> None:
    """Wait until something accepts connections on ``127.0.0.1:port``; fail when ``proc`` exits first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"server exited with status {proc.returncode} before listening on {port}: {tail}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL it when it is still there after ``timeout``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (see the README's test command)")
    return Path(found[-1]).parent


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server (trust authentication, loopback only); yields ``postgresql://…/meshforge``."""
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="meshforge-pg-"))
    data, log = root / "data", root / "log"
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chmod(root, 0o755)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    proc = None
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "meshforge", "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
        )
        proc = subprocess.Popen(
            [*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(root)]
            + ["-c", "fsync=off", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "wb"),
            start_new_session=True,
        )
        wait_port(port, proc, 30, log)
        url = f"postgresql://meshforge@127.0.0.1:{port}/postgres"
        import psycopg

        for _ in range(100):  # the port opens a moment before the server accepts queries
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("CREATE DATABASE meshforge")
                break
            except psycopg.OperationalError:
                time.sleep(0.1)
        yield f"postgresql://meshforge@127.0.0.1:{port}/meshforge"
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def rabbitmq_server(port: int | None = None) -> Iterator[str]:
    """A RabbitMQ node with its own name, ports, database and logs (AMQP on ``port``, a free one when None);
    yields ``amqp://guest:guest@…//``."""
    root = Path(tempfile.mkdtemp(prefix="meshforge-rmq-"))
    port, dist, epmd = port or free_port(), free_port(), free_port()
    node = f"meshforge{os.getpid()}x{port}@localhost"
    env = {
        **os.environ,
        "HOME": str(root),
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
        "RABBITMQ_LOG_BASE": str(root / "log"),
        "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(root / "rabbitmq.pid"),
    }
    (root / "enabled_plugins").write_text("[].\n")
    (root / "rabbitmq.conf").write_text("loopback_users = none\n")
    out = root / "stdout.log"
    proc = subprocess.Popen(
        ["/usr/lib/rabbitmq/bin/rabbitmq-server"],
        env=env,
        stdout=open(out, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=root,
    )
    try:
        wait_port(port, proc, 90, out)
        yield f"amqp://guest:guest@127.0.0.1:{port}//"
    finally:
        stop(proc, 30)
        # epmd is started by the node, detached; it listens on our own port: stop it by that port
        subprocess.run(["epmd", "-port", str(epmd), "-kill"], env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A Redis server without persistence; yields ``redis://127.0.0.1:<port>/0``."""
    root = Path(tempfile.mkdtemp(prefix="meshforge-redis-"))
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_port(port, proc, 20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def moto_s3_server() -> Iterator[str]:
    """moto's S3 stand-in (``moto_server``, from PyPI's ``moto[server]``); yields its endpoint URL."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="meshforge-moto-")) / "log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(port, proc, 30, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        shutil.rmtree(log.parent, ignore_errors=True)
