"""Benchmark: the scale-out service (issue 12's bar) with real RabbitMQ, PostgreSQL and an S3 stand-in.

Starts PostgreSQL and RabbitMQ (Debian packages) and moto's S3 server (PyPI) on loopback ports in temporary
folders, two ``meshforge worker --devices cpu`` processes and one ``meshforge serve --workers 0``; then 8
client threads submit 60 generate jobs (each with its own options, so none is a cache hit, and an
``Idempotency-Key``, so a submission retried across the API restart is safe) and poll them to the end.
Meanwhile it SIGKILLs the worker running a job in ``unwrap`` (seen in the ledger) and starts a new
worker in its place, and SIGKILLs the API server once and starts it again.

The bar: all 60 jobs succeed, exactly once each — one ``result.glb`` object per job in the bucket, and
no job run by two workers at the same time (the workers' ``job.started`` / ``job.finished`` /
``job.abandoned`` events, JSON logs, give each attempt's interval) — and every result downloads through the
API and passes the Khronos glTF validator. Figures (throughput, p50/p99 submit and status latency,
redeliveries) go to ``benchmarks/results/service_scale.md`` (and ``.json``).

    python benchmarks/service_scale.py [--jobs 60] [--clients 8]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.scale.servers import moto_s3_server, postgres_server, rabbitmq_server  # noqa: E402

from _service import free_port, server_env, write_results  # noqa: E402
from meshforge import __version__  # noqa: E402
from meshforge.eval.validate import validate_gltf  # noqa: E402

IMAGE = REPO.parent / "shared" / "data" / "images" / "triposr__chair.png"
OPTIONS = {"resolution": "64", "texture_size": "256"}


class Proc:
    """A ``meshforge`` process with its output in ``log``."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.args, self.log, self.env = args, log, env
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "meshforge.cli", *args], stdout=fh, stderr=subprocess.STDOUT, env=env
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> float:
        self.proc.send_signal(signal.SIGKILL)
        t = time.time()
        self.proc.wait(10)
        return t

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_ready(url: str, timeout: float = 90.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return time.monotonic() - t0
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"API not ready in {timeout} s")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def attempts_overlap(logs: list[Path], kills: dict[int, float]) -> tuple[int, list[str]]:
    """Attempt intervals per job from the workers' JSON job events; returns (attempts seen, jobs whose
    attempts overlapped in time). An attempt cut by a SIGKILL ends at the kill."""
    starts: dict[tuple[str, str], float] = {}
    intervals: dict[str, list[tuple[float, float]]] = {}
    for log in logs:
        pid = int(log.stem.split("-")[-1])
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            name, job = ev.get("event"), ev.get("job_id")
            ts = datetime.fromisoformat(ev["ts"]).timestamp() if "ts" in ev else None
            if not job or ts is None:
                continue
            key = (job, str(pid))
            if name == "job.started":
                starts[key] = ts
            elif name in ("job.finished", "job.abandoned", "job.requeued") and key in starts:
                intervals.setdefault(job, []).append((starts.pop(key), ts))
    for (job, pid), t0 in starts.items():  # cut by a kill
        intervals.setdefault(job, []).append((t0, kills.get(int(pid), time.time())))
    bad = []
    for job, spans in intervals.items():
        spans.sort()
        if any(b[0] < a[1] for a, b in itertools.pairwise(spans)):
            bad.append(job)
    return sum(len(v) for v in intervals.values()), bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "service_scale")
    args = ap.parse_args()
    picture = IMAGE.read_bytes()
    root = Path(tempfile.mkdtemp(prefix="meshforge-scale-"))
    problems: list[str] = []
    with postgres_server() as pg, rabbitmq_server() as amqp, moto_s3_server() as s3:
        aws = {"AWS_ENDPOINT_URL": s3, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        aws["AWS_DEFAULT_REGION"] = "us-east-1"
        boto = boto3.client(
            "s3", endpoint_url=s3, aws_access_key_id="b", aws_secret_access_key="b", region_name="us-east-1"
        )
        boto.create_bucket(Bucket="meshforge")
        env = server_env(
            broker_url=amqp,
            database_url=pg,
            storage_url="s3://meshforge/bench",
            lease_s=5,
            worker_heartbeat_s=1,
            min_free_bytes=0,
            max_queue=1000,
            backend="inflate",
            log_format="json",
        )
        env.update(aws)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api_args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "0", "--log-level", "warning"]
        procs: list[Proc] = []
        worker_logs: list[Path] = []

        def worker() -> Proc:
            n = len(worker_logs)
            log = root / f"worker{n}.log"
            cmd = ["worker", "--devices", "cpu", "--data-dir", str(root / f"w{n}"), "--log-level", "info"]
            p = Proc(cmd, log, env)
            final = log.with_name(f"worker{n}-{p.pid}.log")
            log.rename(final)  # the file stays open in the process under its new name
            worker_logs.append(final)
            procs.append(p)
            return p

        workers = [worker(), worker()]
        api = Proc([*api_args, "--data-dir", str(root / "api")], root / "api.log", env)
        procs.append(api)
        wait_ready(url)
        ids: dict[int, str] = {}
        submit_s: list[float] = []
        status_s: list[float] = []
        lock = threading.Lock()
        t_start = time.monotonic()
        submit_errors = [0]

        def client(c: int) -> None:
            http = httpx.Client(base_url=url, timeout=30)
            mine = [i for i in range(args.jobs) if i % args.clients == c]
            for i in mine:
                opts = dict(OPTIONS, faces=str(1000 + i))
                while True:
                    t0 = time.monotonic()
                    try:
                        r = http.post(
                            "/v1/jobs",
                            files={"file": ("chair.png", picture, "image/png")},
                            data=opts,
                            headers={"Idempotency-Key": f"bench-{i}"},
                        )
                    except httpx.TransportError:
                        with lock:
                            submit_errors[0] += 1
                        time.sleep(0.2)
                        continue
                    if r.status_code in (200, 202):
                        with lock:
                            submit_s.append(time.monotonic() - t0)
                            ids[i] = r.json()["id"]
                        break
                    with lock:
                        submit_errors[0] += 1
                    time.sleep(0.5)
            pending = [ids[i] for i in mine]
            while pending:
                for job_id in list(pending):
                    t0 = time.monotonic()
                    try:
                        r = http.get(f"/v1/jobs/{job_id}")
                    except httpx.TransportError:
                        time.sleep(0.2)
                        continue
                    if r.status_code == 200:
                        with lock:
                            status_s.append(time.monotonic() - t0)
                        if r.json()["state"] in ("succeeded", "failed", "canceled"):
                            pending.remove(job_id)
                time.sleep(0.3)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        for t in threads:
            t.start()
        # chaos: SIGKILL the worker running a job in unwrap (seen in the ledger), then the API once
        kills: dict[int, float] = {}
        killed_job = None
        with psycopg.connect(pg, autocommit=True) as conn:
            end = time.monotonic() + 600
            while killed_job is None and time.monotonic() < end:
                row = conn.execute(
                    "SELECT id, worker FROM jobs WHERE state='running' AND stage='unwrap' LIMIT 1"
                ).fetchone()
                if row is not None:
                    for w in workers:
                        if f":{w.pid}:" in row[1] and w.proc.poll() is None:
                            kills[w.pid] = w.kill()
                            killed_job = row[0]
                            workers.remove(w)
                            workers.append(worker())  # its replacement, as an orchestrator would start
                            break
                time.sleep(0.01)
        if killed_job is None:
            problems.append("no job was seen in unwrap: no worker was killed")
        time.sleep(2.0)
        api.kill()
        t_api_down = time.monotonic()
        procs.remove(api)
        api = Proc([*api_args, "--data-dir", str(root / "api")], root / "api.log", env)
        procs.append(api)
        api_ready_s = wait_ready(url)
        api_down_s = time.monotonic() - t_api_down
        for t in threads:
            t.join(1800)
        wall = time.monotonic() - t_start
        with httpx.Client(base_url=url, timeout=60) as http:
            remote = http.get("/readyz").json()["remote_workers"]
            jobs = [http.get(f"/v1/jobs/{ids[i]}").json() for i in range(args.jobs)]
            invalid = []
            for j in jobs:
                glb = http.get(f"/v1/jobs/{j['id']}/result").content
                if glb[:4] != b"glTF" or validate_gltf(glb)["errors"] != 0:
                    invalid.append(j["id"])
        for p in procs:
            p.stop()
        time.sleep(0.5)
        keys = [
            o["Key"]
            for page in boto.get_paginator("list_objects_v2").paginate(Bucket="meshforge", Prefix="bench/jobs/")
            for o in page.get("Contents", ())
        ]
        with psycopg.connect(pg) as conn:
            rows = conn.execute("SELECT id, state, attempts FROM jobs").fetchall()
    states = {s: sum(1 for r in rows if r[1] == s) for s in {r[1] for r in rows}}
    results = [k for k in keys if k.endswith("/result.glb")]
    per_job = {r[0]: sum(1 for k in results if k.split("/")[2] == r[0]) for r in rows}
    attempts_seen, overlapping = attempts_overlap(worker_logs, kills)
    shutil.rmtree(root, ignore_errors=True)
    redelivered = sorted(r[0] for r in rows if r[2] > 1)
    dropped = sum(w["redeliveries_dropped"] for w in remote)
    if len(rows) != args.jobs:
        problems.append(f"{len(rows)} jobs in the ledger, expected {args.jobs}")
    if states.get("succeeded", 0) != args.jobs:
        problems.append(f"not every job succeeded: {states}")
    if any(n != 1 for n in per_job.values()):
        problems.append(f"result objects per job not all 1: {sorted(set(per_job.values()))}")
    if overlapping:
        problems.append(f"jobs run by two workers at once: {overlapping}")
    if invalid:
        problems.append(f"results failing the validator: {invalid}")
    if killed_job is not None and killed_job not in redelivered:
        problems.append(f"the killed worker's job {killed_job} was not run again")
    summary: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "meshforge": __version__,
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "jobs": args.jobs,
        "clients": args.clients,
        "states": states,
        "wall_s": round(wall, 2),
        "throughput_jobs_per_min": round(60 * args.jobs / wall, 2),
        "submit_p50_ms": round(1000 * pct(submit_s, 50), 1),
        "submit_p99_ms": round(1000 * pct(submit_s, 99), 1),
        "status_p50_ms": round(1000 * pct(status_s, 50), 1),
        "status_p99_ms": round(1000 * pct(status_s, 99), 1),
        "status_requests": len(status_s),
        "submit_retries": submit_errors[0],
        "killed_worker_job": killed_job,
        "jobs_run_more_than_once": len(redelivered),
        "redeliveries_dropped_by_workers": dropped,
        "attempts_seen_in_worker_logs": attempts_seen,
        "concurrent_double_runs": len(overlapping),
        "result_objects": len(results),
        "validator_failures": len(invalid),
        "api_down_s": round(api_down_s, 2),
        "api_ready_s": round(api_ready_s, 2),
    }
    md = f"""# Scale-out service: {args.jobs} jobs, {args.clients} clients, a worker and the API killed

`python benchmarks/service_scale.py` — {summary["date"]}, meshforge {__version__}, {summary["machine"]}, 2 CPU
cores shared with other work. PostgreSQL 15 and RabbitMQ 3.10 (Debian), moto's S3 server; one
`meshforge serve --workers 0`, two `meshforge worker --devices cpu` (inflate backend, resolution 64,
texture 256, faces 1000–{999 + args.jobs}); lease 5 s. During the run the worker holding a job in `unwrap`
was SIGKILLed (and a new worker started), then the API server was SIGKILLed and restarted.

| figure | value |
|---|---|
| jobs succeeded | {states.get("succeeded", 0)} / {args.jobs} |
| result objects in the bucket (`result.glb`) | {len(results)} (one per job: {all(n == 1 for n in per_job.values())}) |
| jobs run by two workers at the same time | {len(overlapping)} |
| results failing the glTF validator | {len(invalid)} |
| wall time | {wall:.1f} s |
| throughput | {summary["throughput_jobs_per_min"]} jobs/min |
| submit latency p50 / p99 | {summary["submit_p50_ms"]} / {summary["submit_p99_ms"]} ms |
| status latency p50 / p99 | {summary["status_p50_ms"]} / {summary["status_p99_ms"]} ms ({len(status_s)} requests) |
| killed worker's job run again | {killed_job in redelivered} ({len(redelivered)} job(s) with attempts > 1) |
| redelivered messages dropped (live lease elsewhere) | {dropped} |
| submissions retried (API down / refused) | {submit_errors[0]} |
| API down after SIGKILL until ready again | {api_down_s:.1f} s |

{"All checks passed." if not problems else "FAILED: " + "; ".join(problems)}
"""
    return write_results(args.out, summary, md, problems)


if __name__ == "__main__":
    sys.exit(main())
