"""Mixed precision that follows the input's device: bf16 autocast on CUDA, plain fp32 on CPU
(CPU autocast is slower than fp32 for these small nets and changes results across machines)."""

from __future__ import annotations

import contextlib

import torch

from s2d_ray.models.allocator import keep_large_allocations_in_heap


def autocast_context(
    device: torch.device | str, enabled: bool = True
) -> contextlib.AbstractContextManager:
    """bf16 ``torch.autocast`` on CUDA when ``enabled``; otherwise a no-op context."""
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA GPU when there is one, else the CPU. Every job resolves its
    device here, so CPU work also gets its large tensors from the heap (``allocator``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu":
        keep_large_allocations_in_heap()
    return device
