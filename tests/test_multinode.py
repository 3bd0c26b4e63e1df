"""A real two-node Ray cluster on this machine: a head and a second node (`ray start --block` in subprocesses, on
127.0.0.1 with their own ports, listening on loopback only), `curate run --address` on it; actors land on both
nodes and the round completes.
Then exactly the processes this test started are stopped (never a machine-wide `ray stop`)."""

from __future__ import annotations

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

from diffcurate.curate.loop.config import default_config
from diffcurate.curate.loop.rundir import RunPaths, init_run, read_rounds


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


def test_two_node_run(tmp_path):
    ports = _ports(14)
    address = f"127.0.0.1:{ports[0]}"
    # token authentication stays on: a fresh token for this cluster, shared by its nodes and the driver
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
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
        nodes.append(_start(["--address", address, *_node_args(ports[7:13])], env))
        _wait_for_nodes(address, 2, env)
        root = tmp_path / "run"
        cfg = default_config("tiny")
        cfg.rounds, cfg.ray.dashboard, cfg.ray.workers = 1, False, 2
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
        placed = json.loads(RunPaths(root).actors.read_text())[-1]["nodes"]
        assert len(set(placed.values())) == 2, placed  # actors on both nodes
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
