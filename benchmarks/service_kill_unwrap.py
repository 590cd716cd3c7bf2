"""Benchmark: SIGKILL ``meshforge serve`` while a job is in its ``unwrap`` stage, then restart it on the same port.

Each round submits an optimize job (FlightHelmet, ``--faces`` faces, so xatlas itself runs for seconds;
no test hook), waits until the job's stage is ``unwrap`` and the unwrap worker process is burning CPU
(xatlas is running), records every process below the server, and SIGKILLs the server. It then restarts
``meshforge serve`` on the same port and measures:

* bind time: from starting the new server to its own socket listening on the port (read from
  ``/proc/net/tcp`` and the new server's ``/proc/<pid>/fd``, so a socket a left-over process still holds
  does not count);
* ready time: until ``/readyz`` answers 200;
* leftovers: processes of the killed server still alive 10 s after the kill, and processes other than the
  new server that hold a socket listening on the port;
* the job's outcome (state, attempts) on the restarted server.

The bar (issue item 1): ten rounds in a row, every restart binds within 10 s, every job succeeds, no
process of an old server is left. Results go to ``benchmarks/results/service_kill_unwrap.md``.

    python benchmarks/service_kill_unwrap.py [--rounds 10] [--faces 30000]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.procs import alive, descendants, socket_inodes, wait_gone  # noqa: E402

from _service import free_port, serve_cmd, server_env  # noqa: E402
from meshforge import __version__  # noqa: E402

SHARED = Path(os.environ.get("MESHFORGE_SHARED") or REPO.parent / "shared")
ASSET = SHARED / "data" / "assets" / "FlightHelmet.glb"
BIND_LIMIT_S = 10.0


def listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on ``port`` (``/proc/net/tcp`` and ``tcp6``, state 0A)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                out.add(int(f[9]))
    return out


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (proc(5)); -1 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    f = text[text.rindex(")") + 2 :].split()
    return int(f[11]) + int(f[12])


def start(data_dir: Path, port: int, log: Path) -> tuple[subprocess.Popen[bytes], float, float]:
    """Start ``meshforge serve``; ``(process, bind seconds, ready seconds)`` (inf when it did not get there)."""
    t0 = time.monotonic()
    with log.open("ab") as fh:
        proc = subprocess.Popen(serve_cmd(data_dir, port), stdout=fh, stderr=subprocess.STDOUT, env=server_env())
    bind = ready = float("inf")
    while time.monotonic() - t0 < 60 and proc.poll() is None:
        if bind == float("inf") and listening_inodes(port) & socket_inodes(proc.pid):
            bind = time.monotonic() - t0
        if bind < float("inf"):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200:
                    ready = time.monotonic() - t0
                    break
            except httpx.TransportError:
                pass
        time.sleep(0.02)
    return proc, bind, ready


def wait_job(http: httpx.Client, job_id: str, done: bool, timeout: float = 300.0) -> dict[str, Any]:
    """Poll a job until it is terminal (``done``) or running its ``unwrap`` stage."""
    end = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < end:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if done and job["state"] in ("succeeded", "failed", "canceled"):
            return job
        if not done and job["state"] == "running" and job["progress"]["stage"] == "unwrap":
            return job
        time.sleep(0.05)
    raise SystemExit(f"job {job_id} timed out: {job}")


def busy_worker(server: int, timeout: float = 30.0) -> bool:
    """Wait until a process below the server burns CPU (xatlas running); False when none did in time."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        kids = descendants(server)
        before = {p: cpu_ticks(p) for p in kids}
        time.sleep(0.2)
        for p in kids:
            if cpu_ticks(p) > before[p] >= 0:
                return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--faces", type=int, default=30000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "service_kill_unwrap.md")
    args = parser.parse_args()
    data = ASSET.read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="mf-kill-unwrap-"))
    load_before = os.getloadavg()[0]
    port = free_port()
    log = tmp / "server.log"
    proc, bind, ready = start(tmp / "data", port, log)
    if ready == float("inf"):
        raise SystemExit(f"the first server did not start:\n{log.read_text()}")
    rows: list[dict[str, Any]] = []
    all_old: list[int] = []
    try:
        for i in range(args.rounds):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as http:
                r = http.post(
                    "/v1/jobs",
                    files={"file": ("FlightHelmet.glb", data)},
                    data={"kind": "optimize", "faces": str(args.faces - i), "texture_size": "256"},
                )
                r.raise_for_status()
                job_id = r.json()["id"]
                wait_job(http, job_id, done=False)
            busy = busy_worker(proc.pid)
            old = descendants(proc.pid)
            all_old += old
            t_kill = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            reaped = time.monotonic() - t_kill
            left = wait_gone(old, 10.0)
            gone = time.monotonic() - t_kill
            restart_at = time.monotonic()
            proc, bind, ready = start(tmp / "data", port, log)
            holders = [
                p
                for p in (int(e) for e in os.listdir("/proc") if e.isdigit())
                if p != proc.pid and alive(p) and socket_inodes(p) & listening_inodes(port)
            ]
            job: dict[str, Any] = {"state": "server did not start", "attempts": None}
            if ready < float("inf"):
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as http:
                    job = wait_job(http, job_id, done=True)
            row = {
                "round": i + 1,
                "worker_busy_at_kill": busy,
                "old_processes": len(old),
                "left_after_10s": left,
                "server_reaped_s": reaped,
                "old_gone_s": gone,
                "port_holders": holders,
                "bind_s": bind,
                "ready_s": ready,
                "kill_to_ready_s": restart_at - t_kill + ready,
                "state": job["state"],
                "attempts": job["attempts"],
            }
            rows.append(row)
            print(row, flush=True)
            if ready == float("inf"):
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        for p in all_old:
            if alive(p):
                os.kill(p, signal.SIGKILL)

    ok = (
        len(rows) == args.rounds
        and all(r["bind_s"] <= BIND_LIMIT_S for r in rows)
        and all(r["state"] == "succeeded" for r in rows)
        and not any(r["left_after_10s"] or r["port_holders"] for r in rows)
    )
    binds = [r["bind_s"] for r in rows]
    lines = [
        "# service: SIGKILL during the unwrap stage, restart on the same port",
        "",
        f"meshforge {__version__}, {datetime.now(UTC):%Y-%m-%d}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores (shared with other work: load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after). `meshforge serve` on 127.0.0.1, 1 CPU worker; each round an optimize "
        f"job (FlightHelmet.glb, {args.faces}−i faces, 256² textures) is killed (SIGKILL) while the job's stage "
        "is `unwrap` and the unwrap worker is running xatlas (its CPU time rising), then the server is "
        "restarted on the same port and the job must finish there.",
        "",
        f"**{'PASS' if ok else 'FAIL'}**: {len(rows)}/{args.rounds} rounds; every restart bound the port within "
        f"{BIND_LIMIT_S:g} s: {all(b <= BIND_LIMIT_S for b in binds)} (max {max(binds):.2f} s); jobs succeeded: "
        f"{sum(r['state'] == 'succeeded' for r in rows)}/{len(rows)}; processes of a killed server left after 10 s: "
        f"{sum(len(r['left_after_10s']) for r in rows)}; other processes listening on the port: "
        f"{sum(len(r['port_holders']) for r in rows)}.",
        "",
        "| round | worker busy at kill | processes below the killed server | all gone after (s) | left after 10 s "
        "| other port holders | bind (s) | /readyz (s) | kill → ready (s) | job | attempts |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']} | {'yes' if r['worker_busy_at_kill'] else 'no'} | {r['old_processes']} "
            f"| {r['old_gone_s']:.2f} | {len(r['left_after_10s'])} | {len(r['port_holders'])} | {r['bind_s']:.2f} "
            f"| {r['ready_s']:.2f} | {r['kill_to_ready_s']:.2f} | {r['state']} | {r['attempts']} |"
        )
    lines += [
        "",
        "Bind time is from starting the new server process to its own socket listening on the port (Python "
        "start-up and imports included); a socket still held by a process of the killed server would not count. "
        '"All gone after" is from the SIGKILL until every process that was below the killed server has ended '
        "(the unwrap worker dies with it: `PR_SET_PDEATHSIG`).",
        "",
        "Before this change (xatlas in a `fork()` of the server; the same script run with `PYTHONPATH` on the "
        "source of commit ba3b924, `--rounds 2`) round 1 failed: the forked child was still alive 10 s after the "
        "kill, held the listening socket, and the restart exited with `[Errno 98] address already in use` (the "
        "child blocks forever writing its atlas into a pipe whose read end it also holds).",
        "",
        f"Rerun: `python benchmarks/service_kill_unwrap.py --rounds {args.rounds} --faces {args.faces}`",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
