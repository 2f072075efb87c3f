"""What every synthetic set is: a module of learnable tensors that materialises into a labelled
set once per use, and knows exactly how many bytes it stores.

Labels are implied by the class-major layout (int64 class indices) unless the set learns them
(FRePo's option, ``learn_labels``): then every video slot carries a float label vector,
initialised one-hot, that is stored with the set and that ``materialize`` returns instead of
the class indices. Networks train on such targets by regression (``supervised_loss``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class SyntheticSet(nn.Module):
    """Base class. ``materialize`` returns (items, labels): items are (N, T, 3, H, W) videos or
    (N, 3, H, W) images in the normalised space of the real clips (SPEC §1)."""

    kind: ClassVar[str]
    num_classes: int

    def __init__(self) -> None:
        super().__init__()
        self.register_parameter("label_vectors", None)  # learnt labels, one row per slot

    def materialize(
        self, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        """Exactly the tensors a saved set holds (labels that are implied are not stored)."""
        raise NotImplementedError

    # -- learnt labels ---------------------------------------------------------------------
    def slot_classes(self) -> torch.Tensor:
        """The class of each video slot, class-major (the rows of ``label_vectors``)."""
        raise NotImplementedError

    def learn_labels(self, init: torch.Tensor | None = None) -> nn.Parameter:
        """Give every slot a learnable float label vector, initialised to ``init`` (one row
        per slot; default one-hot)."""
        if self.label_vectors is None:
            if init is None:
                init = F.one_hot(self.slot_classes(), self.num_classes).float()
            self.label_vectors = nn.Parameter(init.detach().clone().float().to(self._device()))
        return self.label_vectors

    def _targets(self, labels: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """What ``materialize`` returns as labels: the slots' learnt vectors, if any."""
        return labels if self.label_vectors is None else self.label_vectors[slots]

    def _with_labels(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.label_vectors is not None:
            tensors["label_vectors"] = self.label_vectors.detach()
        return tensors

    def _restore_labels(self, tensors: dict[str, torch.Tensor]) -> SyntheticSet:
        if "label_vectors" in tensors:
            with torch.no_grad():
                self.learn_labels().copy_(tensors["label_vectors"])
        return self

    def _device(self) -> torch.device:
        return next(iter(self.buffers()), torch.empty(0)).device

    def layout(self) -> dict:
        """JSON-able shape information that, with ``stored_tensors``, rebuilds the set."""
        raise NotImplementedError

    @classmethod
    def from_saved(cls, layout: dict, tensors: dict[str, torch.Tensor]) -> SyntheticSet:
        raise NotImplementedError

    def storage_bytes(self, dtype: str = "float32") -> int:
        """Bytes of the stored tensors when saved in ``dtype`` (integer tensors unquantised)."""
        itemsize = torch.empty((), dtype=STORAGE_DTYPES[dtype]).element_size()
        total = 0
        for t in self.stored_tensors().values():
            total += t.numel() * (itemsize if t.is_floating_point() else t.element_size())
        return total


def supervised_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on class indices; on learnt label vectors (FRePo's option) the squared
    error summed over classes, meaned over the batch: the regression those labels were
    learnt for."""
    if targets.is_floating_point():
        return (logits - targets).square().sum(-1).mean()
    return F.cross_entropy(logits, targets)


def class_major_labels(num_classes: int, per_class: int) -> torch.Tensor:
    """Labels of class-major sets: per_class items of class 0, then of class 1, ..."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def check_per_class(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
