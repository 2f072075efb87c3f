"""Wall time and peak memory of a run so far, as MLflow metrics.

Peak memory is the process's resident set (``VmHWM``) and, on CUDA, the most memory PyTorch
allocated on the device. A Ray actor runs trial after trial (Tune's ``reuse_actors``), so the
process's lifetime peak would carry one trial's peak into the next: on Linux the high-water
mark is reset when a run starts (writing ``5`` to ``/proc/self/clear_refs``). Where that is
not possible the figure is the process's peak since it started, and says so in its name.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

MIB = 1 << 20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class Usage:
    """Started with the run; ``metrics()`` at any point gives what the run used until then."""

    def __init__(self, device: Any = "cpu") -> None:
        self.started = time.perf_counter()
        self.device = device
        self.cuda = str(device).startswith("cuda")
        self.rss_reset = _reset_rss_peak()
        if self.cuda:
            import torch  # only a run on CUDA has a device peak (tracking stays torch-free)

            torch.cuda.reset_peak_memory_stats(self.device)

    def metrics(self) -> dict[str, float]:
        rss = "peak_rss_mib" if self.rss_reset else "process_peak_rss_mib"
        out = {"seconds": time.perf_counter() - self.started, rss: _rss_peak_bytes() / MIB}
        if self.cuda:
            import torch

            out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(self.device) / MIB
        return out


def _reset_rss_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:  # not Linux, or a kernel older than 4.0
        return False
    return True


def _rss_peak_bytes() -> int:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB elsewhere
