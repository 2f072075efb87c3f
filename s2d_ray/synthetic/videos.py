"""Synthetic sets stored as they are: full videos (the DM/MTT baselines and coresets) or still
images (the static memory of S2D stage 1). Videos may be temporally compressed (fewer frames
than the real clips, expanded on use: ``synthetic.temporal``)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from s2d_ray.synthetic.base import SyntheticSet, class_major_labels
from s2d_ray.synthetic.temporal import expand_module_time, register_expansion


class SyntheticTensors(SyntheticSet):
    """Learnable items stored as they are: full videos (the DM/MTT baselines, coresets) or
    still images (the static memory of S2D stage 1)."""

    item_ndim: ClassVar[int]

    def __init__(self, items: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        if items.dim() != self.item_ndim + 1 or items.shape[0] % num_classes:
            raise ValueError(
                f"{self.kind} must be (C * per_class, ...) with {self.item_ndim + 1} dims for "
                f"{num_classes} classes, got {tuple(items.shape)}"
            )
        self.num_classes = num_classes
        self.per_class = items.shape[0] // num_classes
        self.items = nn.Parameter(items.detach().clone().float())
        self.register_buffer("labels", class_major_labels(num_classes, self.per_class))

    def materialize(self, generator=None):
        return self.items, self._targets(self.labels, slice(None))

    def slot_classes(self) -> torch.Tensor:
        return self.labels

    def of_class(self, c: int) -> torch.Tensor:
        return self.items[c * self.per_class : (c + 1) * self.per_class]

    def stored_tensors(self):
        return self._with_labels({"items": self.items.detach()})

    def layout(self):
        return {
            "num_classes": self.num_classes,
            "per_class": self.per_class,
            "item_shape": list(self.items.shape[1:]),
        }

    @classmethod
    def from_saved(cls, layout, tensors):
        return cls(tensors["items"].float(), layout["num_classes"])._restore_labels(tensors)


class SyntheticVideos(SyntheticTensors):
    """Full synthetic videos (C * vpc, K, 3, H, W), class-major; with a ``temporal`` layout
    (``temporal_layout``) the K stored frames are held over the real clips' T."""

    kind = "videos"
    item_ndim = 4

    def __init__(self, items: torch.Tensor, num_classes: int, temporal: dict | None = None):
        super().__init__(items, num_classes)
        self.temporal = temporal
        if temporal is not None:
            if temporal["syn_frames"] != items.shape[1]:
                raise ValueError(
                    f"the temporal layout stores {temporal['syn_frames']} frames per video, the "
                    f"items have {items.shape[1]}"
                )
            register_expansion(self, temporal)

    def materialize(self, generator=None):
        items, labels = super().materialize(generator)
        if self.temporal is not None:
            items = expand_module_time(self, items, self.temporal)
        return items, labels

    def layout(self):
        layout = super().layout()
        return layout if self.temporal is None else {**layout, "temporal": self.temporal}

    @classmethod
    def from_saved(cls, layout, tensors):
        videos = cls(tensors["items"].float(), layout["num_classes"], layout.get("temporal"))
        return videos._restore_labels(tensors)


class SyntheticImages(SyntheticTensors):
    """Still images (C * spc, 3, H, W), class-major: the static memory."""

    kind = "images"
    item_ndim = 3
