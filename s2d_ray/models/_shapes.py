"""Shape checks shared by the networks, so a wrong input fails with the expected shape spelt out
instead of a cryptic conv or matmul error deep inside the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch

CLIP_DIMS = ("T", "C", "H", "W")


def as_clip_shape(clip_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Validate a ``(T, 3, H, W)`` clip shape and return it as a tuple of ints."""
    shape = tuple(clip_shape)
    if len(shape) != 4 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError(f"clip_shape must be 4 positive ints (T, 3, H, W), got {clip_shape!r}")
    if shape[1] != 3:
        raise ValueError(f"clip_shape must have 3 (RGB) channels at index 1, got {shape}")
    return shape  # type: ignore[return-value]


def check_input(x: torch.Tensor, expected: Sequence[int | None], model: str) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, *expected)``; ``None`` matches any size."""
    names = ("B", *CLIP_DIMS) if len(expected) == 4 else ("B", "C", "H", "W")
    want = ", ".join(
        f"{n}={e}" if e is not None else n for n, e in zip(names[1:], expected, strict=True)
    )
    if x.ndim != len(expected) + 1 or any(
        e is not None and n != e for n, e in zip(x.shape[1:], expected, strict=True)
    ):
        hint = ""
        if len(expected) == 3 and x.ndim == 5:
            hint = "; this is an image net: fold time into the batch, x.flatten(0, 1)"
        raise ValueError(
            f"{model} expects input of shape ({', '.join(names)}) with {want}, "
            f"got {tuple(x.shape)}{hint}"
        )


def pooled(n: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Output length of a conv/pool along one axis (floor mode, as PyTorch computes it)."""
    return (n + 2 * padding - kernel) // stride + 1
