"""The calibration line every benchmark prints first: machines differ 2-3x between sessions,
so absolute figures (ours, and the reference's quoted in issues) compare only through it."""

from __future__ import annotations

import os
import platform
import time

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of fp32 n×n matmul throughput with torch's current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def calibration_line() -> str:
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"{cuda}; 2048² fp32 matmul {matmul_gflops():.0f} GFLOP/s; torch {torch.__version__}"
    )


def print_calibration() -> None:
    print(calibration_line(), flush=True)
