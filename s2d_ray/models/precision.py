"""How fp32 work runs in the loops that take a ``precision`` (experts, the evaluation
protocol, MTT; the others run under PyTorch's defaults: TF32 convolutions, IEEE matrix
products), and the device every job resolves.

On CUDA: ``fp32`` is IEEE fp32 throughout (convolutions too, which PyTorch otherwise runs
on TF32 tensor cores by default on Ampere and later GPUs); ``tf32`` runs fp32 convolutions
and matrix products on TF32 tensor cores (10-bit mantissa, fp32 range); ``bf16`` is bf16
autocast, with what autocast leaves in fp32 on TF32. On a CPU every precision is IEEE fp32:
CPU autocast is slower than fp32 for these small nets and changes results across machines.
bench/gpu_loops.py measures the speed of each and its gradient against IEEE fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

from s2d_ray.models.allocator import keep_large_allocations_in_heap

Precision = Literal["fp32", "tf32", "bf16"]


def autocast_context(
    device: torch.device | str, enabled: bool = True
) -> contextlib.AbstractContextManager:
    """bf16 ``torch.autocast`` on CUDA when ``enabled``; otherwise a no-op context."""
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _cuda_fp32_math(value: Literal["ieee", "tf32"]) -> Iterator[None]:
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = value
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


def fp32_math_context(
    device: torch.device | str, precision: Precision
) -> contextlib.AbstractContextManager:
    """IEEE or TF32 fp32 convolutions and matrix products for ``precision``: wrap forward
    *and* backward (cuDNN reads the setting when each kernel runs), and autocast the forward
    alone (``autocast_context``) for bf16."""
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    return _cuda_fp32_math("ieee" if precision == "fp32" else "tf32")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA GPU when there is one, else the CPU. Every job resolves its
    device here, so CPU work also gets its large tensors from the heap (``allocator``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "a CPU-only build" if torch.version.cuda is None else "no GPU visible"
            raise ValueError(
                f"--device {name}: this machine has no CUDA device (torch {torch.__version__}, "
                f"{build}); use --device cpu or auto"
            )
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name}: only {count} CUDA devices (cuda:0..{count - 1})")
    if device.type == "cpu":
        keep_large_allocations_in_heap()
    return device
