"""A real two-node Ray cluster on this machine: a head and a second node (`ray start --block` in subprocesses, on
127.0.0.1 with their own ports, listening on loopback only), `curate run --address` on it. Every actor is placed on
the second node (a custom resource only it offers), whose processes may not open a store (DIFFCURATE_NO_STORE):
the rounds complete, because only the driver opens the store, and equal a one-node run with the same seed.
Then exactly the processes this test started are stopped (never a machine-wide `ray stop`)."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from test_estimators import build_tiny_run

from diffcurate.curate.loop.config import default_config
from diffcurate.curate.loop.rundir import RunPaths, init_run, read_rounds
from diffcurate.curate.store.env import NO_STORE


def _ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _node_args(ports: list[int]) -> list[str]:
    names = [
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
    ]
    return [a for name, p in zip(names, ports, strict=True) for a in (name, str(p))]


# Ray's CLI turns a node or GCS address of 127.0.0.1 into the machine's network address
# (`resolve_ip_for_localhost`); the test runs the CLI with that one resolution turned off, so that every node,
# and every connection the test makes, stays on loopback
RAY_CLI = [
    sys.executable,
    "-c",
    "import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()",
]


def _start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [*RAY_CLI, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "2", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group of one `ray start --block`: it stops the node's own processes only."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for_nodes(address: str, n: int, env: dict, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run([*RAY_CLI, "status", "--address", address], capture_output=True, text=True, env=env)
        if out.returncode == 0 and out.stdout.count(" node_") >= n:
            return
        time.sleep(1)
    raise AssertionError(f"{n} Ray nodes did not come up at {address}")


def test_two_node_run_with_every_actor_away_from_the_store(ray_cluster, tmp_path, tmp_path_factory):
    ports = _ports(14)
    address = f"127.0.0.1:{ports[0]}"
    # token authentication stays on: a fresh token for this cluster, shared by its nodes and the driver
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    # a node stops at once on SIGTERM instead of draining for 30 s first (nothing runs on it by then)
    env.update(RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    head = _start(
        [
            "--head",
            "--port",
            str(ports[0]),
            "--include-dashboard",
            "false",
            *_node_args(ports[1:7]),
            "--temp-dir",
            temp,
        ],
        env,
    )
    nodes = [head]
    try:
        _wait_for_nodes(address, 1, env)
        away = {**env, NO_STORE: "1"}  # the second node's processes: opening a store is an error there
        resources = ["--resources", json.dumps({"away": 100})]
        nodes.append(_start(["--address", address, *resources, *_node_args(ports[7:13])], away))
        _wait_for_nodes(address, 2, env)
        root = tmp_path / "run"
        cfg = default_config("tiny")
        cfg.rounds, cfg.ray.dashboard, cfg.ray.workers = 1, False, 2
        cfg.model = dataclasses.replace(cfg.model, dropout=0.1)  # the model of the session's shared tiny run
        cfg.ray.actor_resources = {"away": 1.0}
        init_run(root, cfg)
        out = subprocess.run(
            [sys.executable, "-m", "diffcurate.curate", "run", str(root), "--address", address],
            capture_output=True,
            text=True,
            timeout=400,
            env=env,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert [r["round"] for r in read_rounds(root)] == [0, 1]
        assert 'address = ""' in RunPaths(root).config.read_text()  # where to find Ray is not the run's config
        placed = json.loads(RunPaths(root).actors.read_text())[-1]["nodes"]
        probe = subprocess.run(  # what a store open does on the second node
            [sys.executable, "-c", PROBE, address, str(RunPaths(root).store)], capture_output=True, text=True, env=env
        )
        assert probe.returncode == 0, probe.stderr[-2000:]
        away_node, refused = json.loads(probe.stdout.strip().splitlines()[-1])
        assert NO_STORE in refused, refused
        assert set(placed.values()) == {away_node}, placed  # every actor on the node that may not open a store
        import psutil

        mine = {q.pid for p in nodes for q in psutil.Process(p.pid).children(recursive=True)}
        outside = [
            c.laddr
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in mine and c.laddr.ip not in ("127.0.0.1", "::ffff:127.0.0.1")
        ]
        assert outside == [], outside  # both nodes listen on loopback only
    finally:
        for p in reversed(nodes):
            _stop(p)
        shutil.rmtree(temp, ignore_errors=True)
    assert all(p.poll() is not None for p in nodes)
    # the same config and seed on the session's one-node cluster (the shared tiny run, whose first two rounds
    # are this run's): the same picks, the same metrics
    got, want = read_rounds(root), read_rounds(build_tiny_run(tmp_path_factory))[:2]
    assert [r["train_size"] for r in got] == [r["train_size"] for r in want]
    assert [r["added_by_sources"] for r in got] == [r["added_by_sources"] for r in want]
    for a, b in zip(got, want, strict=True):
        assert a["test"]["mae"]["all"] == pytest.approx(b["test"]["mae"]["all"], rel=1e-5)
        assert a["test"]["per_sample_mae"]["p99"] == pytest.approx(b["test"]["per_sample_mae"]["p99"], rel=1e-5)


# run on the cluster: the node the `away` resource puts a task on, and what opening a store does there
PROBE = """
import json, sys, ray
from diffcurate.curate.cluster.session import init_local
init_local(address=sys.argv[1], log_to_driver=False)  # joins on loopback, as `curate run --address` does

@ray.remote(resources={"away": 1})
def probe(path):
    from diffcurate.curate.store.lmdbstore import Store
    try:
        Store(path, readonly=True)
        return ray.get_runtime_context().get_node_id(), "opened"
    except Exception as e:
        return ray.get_runtime_context().get_node_id(), str(e)

print(json.dumps(ray.get(probe.remote(sys.argv[2]))))
"""
