"""The Ray dashboard of `curate run` binds to loopback unless the user asks otherwise. Needs its own cluster, so
it starts one in a subprocess (through our `ray_session`) and that subprocess stops exactly what it started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

SCRIPT = r"""
import ipaddress, json, sys, time
from diffcurate.curate.cluster.session import ray_session


def listening(port):
    # addresses listening on `port`, read from /proc/net/tcp{,6} (state 0A = LISTEN)
    out = set()
    for name, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in open(name).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            hexip, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                raw = bytes.fromhex(hexip)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
                out.add(str(ipaddress.ip_address(raw)))
    return sorted(out)


port = int(sys.argv[1])
with ray_session(num_cpus=1, dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port):
    deadline, addrs = time.time() + 60, []
    while time.time() < deadline and not addrs:
        addrs = listening(port)
        time.sleep(0.5)
print(json.dumps(addrs))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_listens_on_loopback_only():
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(port)], capture_output=True, text=True, timeout=240, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    addrs = json.loads(out.stdout.strip().splitlines()[-1])
    assert addrs == ["127.0.0.1"], addrs  # listening, and on loopback only (not 0.0.0.0 or a public address)
