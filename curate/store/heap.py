"""Keep freed memory in the process: large blocks that are allocated and freed over and over (LMDB's dirty
pages per commit, FFT work arrays per solve) otherwise go back to the kernel after each use and come back as
fresh zeroed pages, paying a page fault per 4 KiB (or a 2 MiB huge-page clear) every time.

Profiled in `curate generate` at the paper preset (1 MiB per sample): the writer's kernel time per
`Store.add` sample fell from 3.1-4.0 to 1.3-2.6 ms and its minor faults from 340 to 35 per sample; the solver
actors spent ~10 % of their time clearing freshly faulted huge pages. glibc only (`mallopt`); elsewhere a no-op.
"""

from __future__ import annotations

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD = 32 << 20  # blocks up to this size come from the heap (glibc's own dynamic cap on 64-bit)
TRIM_THRESHOLD = 256 << 20  # free heap kept before it is returned to the kernel
_done = False


def keep_freed_pages() -> None:
    """Once per process: serve blocks up to 32 MiB from the heap and keep up to 256 MiB of it when freed."""
    global _done
    if _done:
        return
    _done = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (OSError, AttributeError):
        pass
