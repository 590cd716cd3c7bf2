"""Benchmark: two ``meshforge serve`` processes on one data dir; every job must run exactly once.

Starts server A (``python -m meshforge.service``, one CPU worker, the weightless ``inflate`` backend,
JSON logs, a short lease so leases are renewed several times per job and both servers look for expired
leases every second), submits half of ``--jobs`` generate jobs to A, and once A runs one: tries a second
start on A's port (must fail with "in use" and change nothing), starts server B on the same data dir and
submits the other half to B. Both servers take jobs from the shared ledger. When every job has finished
both get SIGTERM (they drain and must exit 0).

Evidence that each job ran exactly once, from three independent records:

- the JSON logs of both processes: exactly one ``job.started`` and one ``job.finished`` event per job
  (with the lease owner, i.e. the process id), and no ``job.requeued`` / ``job.abandoned`` event;
- the ledger (read with SQLite after both exited): ``attempts`` = 1 and ``succeeded`` for every job;
- the job folders: one ``result.glb`` each.

Results go to ``benchmarks/results/service_two_servers.{json,md}``.

    python benchmarks/service_two_servers.py [--jobs 30] [--lease-s 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from _service import serve_cmd, server_env, start_server, write_results
from meshforge import __version__

REPO = Path(__file__).resolve().parents[1]


#: the servers log JSON lines (the job events are the evidence) and queue every job
SETTINGS = {"log_format": "json", "max_queue": 1000}


def submit(http: httpx.Client, image: tuple[str, bytes], options: dict[str, int], i: int) -> str:
    form = {k: str(v) for k, v in options.items()}
    form["faces"] = str(options["faces"] + i)  # every job distinct: no cache hits
    r = http.post("/v1/jobs", files={"file": image}, data=form)
    if r.status_code != 202:
        raise SystemExit(f"job {i}: {r.status_code} {r.text}")
    return str(r.json()["id"])


def wait_all(http: httpx.Client, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    end = time.monotonic() + timeout
    final: dict[str, dict[str, Any]] = {}
    while time.monotonic() < end and len(final) < len(ids):
        for job_id in ids:
            if job_id not in final:
                job = http.get(f"/v1/jobs/{job_id}").json()
                if job["state"] in ("succeeded", "failed", "canceled"):
                    final[job_id] = job
        time.sleep(0.2)
    return final


def job_events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if str(rec.get("event", "")).startswith("job."):
                out.append(rec)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--lease-s", type=float, default=2.0)
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "images")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "service_two_servers")
    args = parser.parse_args()

    images = [(p.name, p.read_bytes()) for p in sorted(args.images.iterdir()) if p.is_file()]
    options = {"resolution": 32, "faces": 500, "texture_size": 64}
    half = args.jobs // 2
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="meshforge-two-") as tmp:
        data_dir, logs = Path(tmp) / "data", [Path(tmp) / "a.log", Path(tmp) / "b.log"]
        start = time.perf_counter()
        proc_a, url_a = start_server(data_dir, logs[0], log_level="info", **SETTINGS, lease_s=args.lease_s)
        procs = [proc_a]
        try:
            with httpx.Client(base_url=url_a, timeout=60.0) as a:
                ids = [submit(a, images[i % len(images)], options, i) for i in range(half)]
                end = time.monotonic() + 60
                while a.get(f"/v1/jobs/{ids[0]}").json()["state"] == "queued" and time.monotonic() < end:
                    time.sleep(0.05)
                # a second start on A's port while A runs a job: must fail and change nothing
                port_a = url_a.rsplit(":", 1)[1]
                busy = subprocess.run(
                    serve_cmd(data_dir, int(port_a), "info"),
                    capture_output=True,
                    text=True,
                    timeout=120,
                    env=server_env(**SETTINGS, lease_s=args.lease_s),
                )
                busy_line = busy.stderr.strip().splitlines()[-1] if busy.stderr.strip() else ""
                if busy.returncode != 1 or "in use" not in busy_line:
                    problems.append(f"a start on a busy port gave {busy.returncode}: {busy_line!r}")
                proc_b, url_b = start_server(data_dir, logs[1], log_level="info", **SETTINGS, lease_s=args.lease_s)
                procs.append(proc_b)
                with httpx.Client(base_url=url_b, timeout=60.0) as b:
                    ids += [submit(b, images[i % len(images)], options, i) for i in range(half, args.jobs)]
                    final = wait_all(b, ids, timeout=600)
            wall = time.perf_counter() - start
        finally:
            codes = []
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                try:
                    codes.append(proc.wait(60))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    codes.append(None)
        events = [job_events(log) for log in logs]
        with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
            ledger = {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, state, attempts FROM jobs")}
        results = {job_id: (data_dir / "jobs" / job_id / "result.glb").is_file() for job_id in ids}

    started = Counter(r["job_id"] for log in events for r in log if r["event"] == "job.started")
    finished = Counter(r["job_id"] for log in events for r in log if r["event"] == "job.finished")
    by_server = [sum(1 for r in log if r["event"] == "job.started") for log in events]
    pids = [{r["worker"].rsplit(":", 2)[1] for r in log if r["event"] == "job.started"} for log in events]
    others = [r for log in events for r in log if r["event"] in ("job.requeued", "job.abandoned")]
    attempts = Counter(ledger[i][1] for i in ids if i in ledger)
    states = Counter(ledger[i][0] for i in ids if i in ledger)
    if len(final) != len(ids):
        problems.append(f"{len(ids) - len(final)} jobs did not finish in time")
    if sorted(started.values()) != [1] * len(ids) or set(started) != set(ids):
        problems.append(f"start records per job: {dict(Counter(started.values()))}, jobs started {len(started)}")
    if sorted(finished.values()) != [1] * len(ids) or set(finished) != set(ids):
        problems.append(f"finish records per job: {dict(Counter(finished.values()))}")
    if others:
        problems.append(f"{len(others)} requeue/abandon events: {others[:3]}")
    if attempts != Counter({1: len(ids)}) or states != Counter({"succeeded": len(ids)}):
        problems.append(f"ledger: attempts {dict(attempts)}, states {dict(states)}")
    if not all(results.values()):
        problems.append(f"{sum(not v for v in results.values())} jobs have no result.glb")
    if codes != [0, 0]:
        problems.append(f"exit statuses after SIGTERM: {codes}")
    if min(by_server) == 0:
        problems.append(f"one server ran no job ({by_server}): the test did not exercise sharing")
    if any(len(p) != 1 for p in pids) or pids[0] == pids[1]:
        problems.append(f"lease owners' process ids per log: {pids}")

    summary = {
        "meshforge": __version__,
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "jobs": len(ids),
        "lease_s": args.lease_s,
        "options": options,
        "busy_port_start": {"exit": busy.returncode, "stderr_last_line": busy_line},
        "jobs_started_by_server": by_server,
        "start_records_per_job": dict(Counter(started.values())),
        "finish_records_per_job": dict(Counter(finished.values())),
        "requeue_or_abandon_events": len(others),
        "ledger_attempts": dict(attempts),
        "ledger_states": dict(states),
        "results_on_disk": sum(results.values()),
        "exit_statuses_after_sigterm": codes,
        "wall_s": round(wall, 1),
        "problems": problems,
    }
    return write_results(args.out, summary, markdown(summary), problems)


def markdown(s: dict[str, Any]) -> str:
    busy = s["busy_port_start"]
    verdict = "**every job ran exactly once**" if not s["problems"] else "**FAILED**: " + "; ".join(s["problems"])
    opts = s["options"]
    return "\n".join(
        [
            "# service: two servers on one data dir",
            "",
            f"meshforge {s['meshforge']}, {s['date']}, Python {s['python']}, {s['cpu_cores']} CPU cores (shared "
            f"with other work). Two `python -m meshforge.service` processes (one CPU worker each, inflate backend "
            f"at resolution {opts['resolution']}, {opts['faces']}+i faces, {opts['texture_size']}² textures) on "
            f"one data dir, lease {s['lease_s']:g} s (renewed every {s['lease_s'] / 3:.2f} s; each server "
            "re-queues expired leases every second). Server B was started while A ran a job, after a start on "
            "A's port had failed.",
            "",
            f"Result: {verdict}. Wall time {s['wall_s']} s.",
            "",
            "| evidence | value |",
            "|---|---|",
            f"| jobs submitted (half to each server) | {s['jobs']} |",
            f"| `job.started` log records per job (both logs) | {s['start_records_per_job']} |",
            f"| `job.finished` log records per job | {s['finish_records_per_job']} |",
            f"| `job.requeued` / `job.abandoned` records | {s['requeue_or_abandon_events']} |",
            f"| jobs started by server A / B | {s['jobs_started_by_server'][0]} / {s['jobs_started_by_server'][1]} |",
            f"| ledger `attempts` (count of jobs) | {s['ledger_attempts']} |",
            f"| ledger states | {s['ledger_states']} |",
            f"| `result.glb` files | {s['results_on_disk']} |",
            f"| start on A's busy port | exit {busy['exit']}: `{busy['stderr_last_line']}` |",
            f"| exit statuses after SIGTERM (A, B) | {s['exit_statuses_after_sigterm']} |",
            "",
            "Rerun: `PYTHONPATH=src python benchmarks/service_two_servers.py --jobs 30`.",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
