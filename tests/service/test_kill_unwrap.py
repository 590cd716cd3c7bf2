"""SIGKILL of the real server while a job is in its ``unwrap`` stage: the restart on the same port binds,
the job finishes, and no process of the killed server is left (none holds its port or blocks on a pipe)."""

from __future__ import annotations

import time

from ..procs import descendants, kill_all, wait_gone
from .conftest import SMALL, Server, wait_for

#: the unwrap worker sleeps this long before xatlas (TEST ONLY), so the kill lands while it runs
UNWRAP_DELAY_S = 1.0


def test_kill_during_unwrap_then_restart_on_the_same_port(tmp_path, chair):
    data_dir = tmp_path / "data"
    servers: list[Server] = []
    leftovers: list[int] = []

    def start(port: int | None = None) -> Server:
        server = Server(data_dir, tmp_path / f"server{len(servers)}.log", unwrap_delay_s=UNWRAP_DELAY_S)
        if port is not None:
            server.port, server.url = port, f"http://127.0.0.1:{port}"
        servers.append(server)
        return server.start()

    try:
        server = start()
        for round_ in range(3):
            with server.client() as http:
                r = http.post(
                    "/v1/jobs", files={"file": ("chair.png", chair)}, data=dict(SMALL, faces=str(2000 - round_))
                )
                assert r.status_code == 202, r.text
                job_id = r.json()["id"]
                wait_for(http, job_id, ("running",), timeout=60, where=lambda j: j["progress"]["stage"] == "unwrap")
            time.sleep(0.3)  # the unwrap has been handed to the worker, which is "running xatlas"
            assert server.proc is not None
            old = descendants(server.proc.pid)
            assert old, "the server runs no unwrap worker process"
            server.kill()  # SIGKILL: no shutdown code runs
            leftovers += old
            assert wait_gone(old, 10) == [], f"round {round_}: processes of the killed server are left"

            server = start(server.port)  # fails with "address already in use" while anything holds the port
            with server.client() as http:
                done = wait_for(http, job_id, timeout=60)
                assert done["state"] == "succeeded" and done["attempts"] == 2, (round_, done)
                assert done["report"]["stages"], done
    finally:
        for s in servers:
            s.stop()
        kill_all(leftovers)
