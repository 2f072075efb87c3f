"""Large CPU tensors from the heap, not from fresh ``mmap`` pages.

glibc serves every allocation above 32 MiB with its own ``mmap`` and unmaps it on free, so a
training step that allocates the same big activations again pays the kernel to fault in and
zero every page again. Training video networks does exactly that (a 16x112² ConvNet3D batch
of 10 holds 128 MiB activations). Serving them from the heap, and keeping freed memory there,
measured 1.50x faster per S2D-MTT iteration at 16x112² and 1.04x at 8x64²
(bench/distill_step.py --part alloc; the process keeps its peak memory instead of returning it). The
price: the heap fragments, so the constant-memory MTT unroll's peak grows 1.20x from 10 to
20 steps at 16x112² instead of 1.08x (still 3.0 GiB against full's 11.5 GiB).

``S2D_MALLOC=default`` keeps glibc's behaviour. Other C libraries: a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
_applied = False


def keep_large_allocations_in_heap() -> bool:
    """Apply once per process; True when glibc accepted it."""
    global _applied
    if _applied:
        return True
    if os.environ.get("S2D_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
