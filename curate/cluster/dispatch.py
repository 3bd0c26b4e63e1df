"""The one solver dispatcher: chunks of configurations to the solver actors, with backpressure, handled as they
finish. `generate` streams the results into the store; the loop reassembles them in order by offset.

At most IN_FLIGHT tasks wait per actor (the least-loaded actor gets the next chunk), results are taken with
`ray.wait` in completion order (not submission order), and a chunk holds `default_chunk(grid)`
configurations, so no result object is larger than 8 MiB at the paper preset. Solver actors restart after a
crash and Ray retries their tasks (actors.RESTARTS), so a killed actor costs time, not results.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np

from diffcurate.solvers.interface import Batch

# chunks queued per solver actor: enough that the actors keep solving while the driver commits a batch (an
# fsync'd transaction takes a while at the paper preset; docs/benchmarks.md, "Measured choices")
IN_FLIGHT = 8


def default_chunk(grid: tuple[int, int]) -> int:
    """Configurations per solver task: 2^21 / (H W) in [1, 64] (64 at L <= 128, 8 = 8 MiB of results at L = 512),
    about the same solving time per task at every size, so actors stay balanced to the end of a run and results
    flow steadily; smaller tasks cost Ray more per sample, larger ones balance worse (docs/benchmarks.md)."""
    return int(np.clip(2**21 // (grid[0] * grid[1]), 1, 64))


# on_result(tag, configs, y (k, H, W) float32 read-only, start, end, pending, in_flight)
OnResult = Callable[[object, Batch, np.ndarray, float, float, int, int], None]


def solve_chunks(
    solvers: list, chunks: Iterable[tuple[object, Batch]], on_result: OnResult, in_flight: int = IN_FLIGHT
) -> None:
    """Solve (tag, configs) chunks on the actors; `on_result` runs in this thread as each one finishes, with the
    number of chunks still to submit (`pending`) and still running (`in_flight`)."""
    import ray

    pending = list(chunks)
    running: dict = {}
    load = dict.fromkeys(range(len(solvers)), 0)
    while pending or running:
        while pending and min(load.values()) < in_flight:
            tag, cfg = pending.pop(0)
            a = min(load, key=load.get)
            running[solvers[a].solve_timed.remote(cfg)] = (tag, cfg, a)
            load[a] += 1
        [done], _ = ray.wait(list(running), num_returns=1)
        tag, cfg, a = running.pop(done)
        load[a] -= 1
        y, start, end = ray.get(done)
        on_result(tag, cfg, y, start, end, len(pending), len(running))


def solve_ordered(
    solvers: list,
    configs: Batch,
    grid: tuple[int, int],
    chunk: int | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, float, float]:
    """(n, H, W) float32 fields of `configs` in order, and when the actors started and finished solving them.
    `on_chunk(offset)` runs after each chunk lands (progress, or a test's fault injection)."""
    n = len(configs)
    chunk = chunk or default_chunk(grid)
    out = np.empty((n, *grid), np.float32)
    span = [np.inf, 0.0]

    def put(a, cfg, y, start, end, *_):
        out[a : a + len(y)] = y
        span[0], span[1] = min(span[0], start), max(span[1], end)
        if on_chunk is not None:
            on_chunk(a)

    solve_chunks(solvers, [(a, configs[a : a + chunk]) for a in range(0, n, chunk)], put)
    return out, span[0], span[1]


class Background:
    """solve_ordered in a driver thread: the loop solves round k+1's pool while round k trains."""

    def __init__(self, solvers: list, configs: Batch, grid: tuple[int, int]):
        self.result: tuple | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(solvers, configs, grid), daemon=True)
        self._thread.start()

    def _run(self, solvers, configs, grid) -> None:
        try:
            self.result = solve_ordered(solvers, configs, grid)
        except BaseException as e:  # re-raised in the driver's thread by `join`
            self.error = e

    def settle(self, timeout: float) -> None:
        """Wait up to `timeout` s for the thread to end, whatever its outcome: Ray must not shut down under a
        thread that is inside one of its calls (the process would crash as it exits). Killing the solver actors
        first ends their calls with an error, so the thread ends at once."""
        self._thread.join(timeout)

    def join(self) -> tuple[np.ndarray, float, float]:
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result
