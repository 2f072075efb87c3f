"""What every synthetic set is: a module of learnable tensors that materialises into a labelled
set once per use, and knows exactly how many bytes it stores."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class SyntheticSet(nn.Module):
    """Base class. ``materialize`` returns (items, labels): items are (N, T, 3, H, W) videos or
    (N, 3, H, W) images in the normalised space of the real clips (SPEC §1)."""

    kind: ClassVar[str]
    num_classes: int

    def materialize(
        self, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        """Exactly the tensors a saved set holds (labels that are implied are not stored)."""
        raise NotImplementedError

    def layout(self) -> dict:
        """JSON-able shape information that, with ``stored_tensors``, rebuilds the set."""
        raise NotImplementedError

    @classmethod
    def from_saved(cls, layout: dict, tensors: dict[str, torch.Tensor]) -> SyntheticSet:
        raise NotImplementedError

    def storage_bytes(self, dtype: str = "float32") -> int:
        """Bytes of the stored tensors when saved in ``dtype`` (labels are int64, unquantised)."""
        itemsize = torch.empty((), dtype=STORAGE_DTYPES[dtype]).element_size()
        total = 0
        for name, t in self.stored_tensors().items():
            total += t.numel() * (t.element_size() if name == "labels" else itemsize)
        return total


def class_major_labels(num_classes: int, per_class: int) -> torch.Tensor:
    """Labels of class-major sets: per_class items of class 0, then of class 1, ..."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def check_per_class(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
