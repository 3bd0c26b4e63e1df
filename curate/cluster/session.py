"""Connecting to Ray: `ray_session` starts a local cluster on 127.0.0.1 (`init_local`: every server on loopback, the
dashboard too, or none) or joins one with --address, and shuts down only what it started."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from diffcurate.common.errors import InputError, terminate_as_interrupt

START_TIMEOUT = "CURATE_RAY_START_TIMEOUT"  # seconds a local Ray may take to start, retries included
DEFAULT_START_TIMEOUT = 120.0


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int | None = None,
    dashboard: bool = False,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int | None = None,
) -> Iterator[None]:
    """Use the running Ray (tests' session fixture), join `address`, or start a local cluster; shut down only
    what this call started. The dashboard binds to loopback unless the user names another host.

    A local start that fails (Ray's own node start gives up after 30 s on a loaded machine) is tried again until
    `CURATE_RAY_START_TIMEOUT` seconds (default 120) have passed, then is `ClusterUnavailable`: one line, exit 1,
    nothing written. A session ended by an error or an interrupt shuts Ray down with the process's native stderr
    silenced, so that Ray's own log lines about tasks cut short do not bury the one line that says what happened."""
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs: dict = dict(configure_logging=True, logging_level="ERROR", log_to_driver=False)
    if address and address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost"):
        try:  # a cluster of `init_local` (its nodes on 127.0.0.1): this driver joins it on loopback too
            init_local(address=address, **kwargs)
        except ConnectionError:  # a cluster whose nodes have the network address (`ray start`), reached locally
            ray.shutdown()
            ray.init(address=address, **kwargs)
    elif address:
        ray.init(address=address, **kwargs)
    else:
        if dashboard_port is not None:
            kwargs["dashboard_port"] = dashboard_port
        start_local(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host=dashboard_host, **kwargs)
    terminate_as_interrupt()  # Ray's driver installed its own SIGTERM handler (a stack dump, no cleanup)
    ended = False
    try:
        yield
        ended = True
    finally:
        if ended:
            ray.shutdown()
        else:
            with native_stderr_silenced():
                ray.shutdown()
        terminate_as_interrupt()  # a SIGTERM after the work is the interrupted line, not a silent death


def start_local(**kwargs) -> None:
    """`init_local(**kwargs)`, tried again while `CURATE_RAY_START_TIMEOUT` allows; `ClusterUnavailable` after."""
    import time

    import ray

    from diffcurate.common.errors import ClusterUnavailable

    try:
        timeout = float(os.environ.get(START_TIMEOUT) or DEFAULT_START_TIMEOUT)
    except ValueError:
        raise InputError(f"{START_TIMEOUT} must be a number of seconds, got {os.environ[START_TIMEOUT]!r}") from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            init_local(**kwargs)
            return
        except Exception as e:  # Ray raises a bare Exception when its node times out
            with native_stderr_silenced():
                ray.shutdown()  # what the failed start left running
            if time.monotonic() >= deadline:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ClusterUnavailable(
                    f"Ray did not start within {timeout:g} s ({reason}); nothing was written: re-run the same "
                    f"command to resume ({START_TIMEOUT} sets the wait)"
                ) from None


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 sent to /dev/null while the block runs (CURATE_DEBUG=1 keeps it): Ray's C++ core worker
    logs there directly, past Python's sys.stderr."""
    if os.environ.get("CURATE_DEBUG") == "1":
        yield
        return
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


LOOPBACK = "127.0.0.1"


def init_local(**kwargs) -> None:
    """`ray.init(**kwargs)` of a local cluster whose node address is 127.0.0.1, so that its servers (GCS, raylet,
    workers, the dashboard agent, metrics) listen on loopback only and nobody else on the network reaches them;
    with `address`, a driver joining such a cluster (its own node address must be the cluster's).

    Ray turns a loopback node address into the machine's network address unless its own switch for single-machine
    clusters (`ray_constants.ENABLE_RAY_CLUSTER`, the env var RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER) is off; it is
    turned off for this call only (it is read while the node starts), so that this process may still join real
    clusters later and `ray start` in child processes is unaffected. tests/test_cluster.py lists the sockets
    and fails if a Ray upgrade changes this."""
    import ray
    import ray._private.ray_constants as constants

    was = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(_node_ip_address=LOOPBACK, **kwargs)
    finally:
        constants.ENABLE_RAY_CLUSTER = was
