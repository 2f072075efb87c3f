"""ConvNet: the standard 2-D dataset-distillation backbone, used for static (image) learning
and as the per-frame trunk of the recurrent nets."""

from __future__ import annotations

import torch
from torch import nn

from s2d_ray.models._shapes import check_input
from s2d_ray.models.registry import register_model

NORMS = ("instancenorm", "batchnorm", "none")


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "instancenorm":
        # GroupNorm with one channel per group is instance norm with affine parameters and,
        # unlike nn.InstanceNorm2d, no running statistics to track.
        return nn.GroupNorm(width, width, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def conv_trunk(
    image_shape: tuple[int, int, int], *, depth: int, width: int, norm: str
) -> tuple[nn.Sequential, int]:
    """``depth`` (conv3x3, norm, ReLU, avg-pool 2) blocks and their flattened output size."""
    channels, height, wide = image_shape
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be positive, got depth={depth}, width={width}")
    if height >> depth < 1 or wide >> depth < 1:
        raise ValueError(
            f"images of shape (3, H, W) = {tuple(image_shape)} are too small for {depth} "
            f"halving blocks: need H, W >= {1 << depth}"
        )
    layers: list[nn.Module] = []
    in_ch = channels
    for _ in range(depth):
        layers += [
            nn.Conv2d(in_ch, width, kernel_size=3, padding=1),
            _norm(norm, width),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
        ]
        in_ch = width
    return nn.Sequential(*layers), width * (height >> depth) * (wide >> depth)


class ConvNet(nn.Module):
    """ConvNet-D{depth}: conv trunk then one linear classifier on the flattened features."""

    input_kind = "image"

    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int],
        *,
        depth: int = 3,
        width: int = 128,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.features, self.embed_dim = conv_trunk(
            self.image_shape, depth=depth, width=width, norm=norm
        )
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.image_shape, type(self).__name__)
        if torch.is_grad_enabled() or x.device.type != "cpu":
            return self.features(x).flatten(1)
        # Without a graph (DM's real frames, the class groups' scores) the trunk runs
        # channels-last: oneDNN's convolutions and pooling are ~1.4x faster there on CPU
        # (bench/layouts.py). With a graph it measured no faster, so it stays.
        features = self.features(x.contiguous(memory_format=torch.channels_last))
        return features.contiguous().flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@register_model("convnet")
def _convnet(*, num_classes: int, clip_shape: tuple[int, int, int, int], **kw) -> ConvNet:
    return ConvNet(num_classes, clip_shape[1:], **kw)


@register_model("convnetd4")
def _convnetd4(*, num_classes: int, clip_shape: tuple[int, int, int, int], **kw) -> ConvNet:
    return ConvNet(num_classes, clip_shape[1:], depth=4, **kw)
