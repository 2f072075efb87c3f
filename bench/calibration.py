"""The calibration line every benchmark prints first: machines differ 2-3x between sessions,
so absolute figures (ours, and the reference's quoted in issues) compare only through it.

Two figures, because one does not predict the other: the 2048² matmul, and a ConvNet3D
training step on 10 clips of 8x64² (an ipc-1 evaluation step on the embedded set, the
search's inner loop; 3-D convolutions are nearly all of every loop's time). Two 2-core AMD
EPYC sessions whose matmul lines read 178-187 and 190-200 GFLOP/s ran the same search trial in
times about 2x apart. The line also names the CPU's widest vector extensions, by which
oneDNN picks its convolution kernels."""

from __future__ import annotations

import os
import platform
import time

import torch


def cpuinfo(field: str) -> str | None:
    """The first CPU's ``field`` in /proc/cpuinfo (Linux); None elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return cpuinfo("model name") or platform.processor() or "unknown CPU"


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


def vector_extensions() -> str:
    """The widest x86 vector extensions the CPU reports (oneDNN picks kernels by them)."""
    flags = set((cpuinfo("flags") or "").split())
    found = [name for name in ("avx512f", "avx512_bf16", "avx2") if name in flags]
    return "+".join(found) if found else "no AVX2/AVX-512"


def convnet3d_step_ms(clips: int = 10, repeats: int = 5) -> float:
    """Best-of ConvNet3D forward + backward + SGD step on ``clips`` clips of 8x64², CPU."""
    from s2d_ray.models import ConvNet3D

    torch.manual_seed(0)
    net = ConvNet3D(10, (8, 3, 64, 64))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(clips, 8, 3, 64, 64), torch.arange(clips) % 10
    best = float("inf")
    for step in range(repeats + 1):  # the first is a warm-up
        started = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
        if step:
            best = min(best, time.perf_counter() - started)
    return best * 1e3


def calibration_line() -> str:
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"machine: {cpu_model()} ({vector_extensions()}), {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, {cuda}; 2048² fp32 matmul "
        f"{matmul_gflops():.0f} GFLOP/s; ConvNet3D step, 10 clips of 8x64², "
        f"{convnet3d_step_ms():.0f} ms; torch {torch.__version__}"
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
