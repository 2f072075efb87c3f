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


def gpu_matmul_tflops(dtype: torch.dtype, tf32: bool = False, n: int = 8192) -> float:
    """Best-of n×n matmul throughput on the first GPU; fp32 in IEEE unless ``tf32``."""
    from s2d_ray.models import fp32_math_context

    with fp32_math_context("cuda", "tf32" if tf32 else "fp32"):
        a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
        torch.mm(a, b)
        best = float("inf")
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.mm(a, b)
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        return 2 * n**3 / best / 1e12


def print_gpu_calibration() -> None:
    """The GPU's line: its name and 8192² matmul TFLOP/s in IEEE fp32, TF32 and bf16."""
    props = torch.cuda.get_device_properties(0)
    print(
        f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
        f"{props.multi_processor_count} SMs; 8192² matmul TFLOP/s: "
        f"fp32 {gpu_matmul_tflops(torch.float32):.0f}, "
        f"tf32 {gpu_matmul_tflops(torch.float32, tf32=True):.0f}, "
        f"bf16 {gpu_matmul_tflops(torch.bfloat16):.0f}",
        flush=True,
    )
