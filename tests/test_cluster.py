"""A local cluster listens on loopback only: every socket that a Ray process of `ray_session` opens for listening
is bound to 127.0.0.1, dashboard included, and its GCS address is 127.0.0.1 (a Ray upgrade that turns the node
address back into the machine's network address fails here)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, psutil, ray
from diffcurate.curate.cluster.actors import make_solvers
from diffcurate.curate.cluster.session import ray_session
from diffcurate.solvers.problem import PRESETS

with ray_session(num_cpus=2, dashboard=DASHBOARD):
    solvers = make_solvers(PRESETS["tiny"].physics, 1)
    ray.get([s.pid.remote() for s in solvers])  # a worker process is up
    mine = {p.pid for p in psutil.Process().children(recursive=True)} | {psutil.Process().pid}
    listening = [
        {"pid": c.pid, "ip": c.laddr.ip, "port": c.laddr.port}
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in mine
    ]
    print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "listening": listening}))
"""
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _probe(dashboard: bool) -> dict:
    code = PROBE.replace("DASHBOARD", str(dashboard))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_local_cluster_listens_on_loopback_only():
    for dashboard in (False, True):
        got = _probe(dashboard)
        assert got["gcs"].startswith("127.0.0.1:")
        assert len(got["listening"]) >= 4  # GCS, raylet, workers ...: the probe saw the cluster's sockets
        outside = [s for s in got["listening"] if s["ip"] not in LOOPBACK]
        assert outside == [], outside
