"""A local cluster listens on loopback only: every socket that a Ray process of `ray_session` opens for listening
is bound to 127.0.0.1, the dashboard of `curate run` included (on the port asked for, once it listens), and its GCS
address is 127.0.0.1 (a Ray upgrade that turns the node address back into the machine's network address fails
here). Each cluster is started in a subprocess, which stops exactly what it started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

PROBE = """
import json, sys, time, psutil, ray
from diffcurate.curate.cluster.actors import make_solvers
from diffcurate.curate.cluster.session import ray_session
from diffcurate.solvers.problem import PRESETS

port = int(sys.argv[1]) if len(sys.argv) > 1 else None
with ray_session(num_cpus=2, dashboard=port is not None, dashboard_port=port):
    solvers = make_solvers("diffusion", PRESETS["tiny"].physics, 1)
    ray.get([s.pid.remote() for s in solvers])  # a worker process is up
    deadline = time.time() + 60  # and the dashboard listens, when there is one
    while port and time.time() < deadline and not any(
        c.laddr.port == port for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
    ):
        time.sleep(0.5)
    mine = {p.pid for p in psutil.Process().children(recursive=True)} | {psutil.Process().pid}
    listening = [
        {"pid": c.pid, "ip": c.laddr.ip, "port": c.laddr.port}
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in mine
    ]
    print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "listening": listening}))
"""
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _probe(dashboard_port: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    args = [] if dashboard_port is None else [str(dashboard_port)]
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_local_cluster_listens_on_loopback_only():
    """A cluster with the dashboard: the dashboard's sockets besides those every local cluster opens."""
    port = _free_port()
    got = _probe(port)
    assert got["gcs"].startswith("127.0.0.1:")
    assert len(got["listening"]) >= 4  # GCS, raylet, workers ...: the probe saw the cluster's sockets
    outside = [s for s in got["listening"] if s["ip"] not in LOOPBACK]
    assert outside == [], outside
    # the dashboard listens where asked, on loopback only (not 0.0.0.0)
    assert [s["ip"] for s in got["listening"] if s["port"] == port] == ["127.0.0.1"], got
