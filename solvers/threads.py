"""Threads of one process for the solvers: torch's and scipy.fft's (the CPU path of `fast`)."""

from __future__ import annotations

import torch

_FFT_WORKERS = [-1]  # scipy.fft threads for the CPU path of `fast`; -1 = all cores


def set_threads(n: int) -> None:
    """Limit one process (e.g. one Ray solver actor with num_cpus=1) to n threads for torch and scipy.fft."""
    torch.set_num_threads(max(1, n))
    _FFT_WORKERS[0] = max(1, n)


def fft_workers() -> int:
    return _FFT_WORKERS[0]
