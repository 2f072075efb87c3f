"""ConvNet3D ("MiniC3D"): the small 3-D CNN used as expert and evaluation network.

Deliberately normalisation-free and shallow: the distillation unrolls many training steps of
it, so it must be cheap and have no running statistics to carry through the unroll.
"""

from __future__ import annotations

import torch
from torch import nn

from s2d_ray.models._shapes import check_input, pooled
from s2d_ray.models.registry import register_model

WIDTHS = (64, 128, 128)
POOLS = ((1, 2, 2), (2, 2, 2), (2, 2, 2))
CONV_KERNEL, CONV_STRIDE, CONV_PAD = (3, 7, 7), (1, 2, 2), (1, 3, 3)


def _head_pool(height: int) -> tuple[int, int, int]:
    """The spec's head: a 2x2 spatial average only when frames are large (H > 64)."""
    return (2, 2, 2) if height > 64 else (2, 1, 1)


def feature_shape(frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(C, T', H', W') after the three blocks; ``ValueError`` if the clip is too small."""
    size = [frames, height, width]
    conv = list(zip(CONV_KERNEL, CONV_STRIDE, CONV_PAD, strict=True))
    for pool in POOLS:
        size = [pooled(n, k, s, p) for n, (k, s, p) in zip(size, conv, strict=True)]
        size = [pooled(n, k, k) for n, k in zip(size, pool, strict=True)]
    head = _head_pool(height)
    if any(n < k for n, k in zip(size, head, strict=True)):
        raise ValueError(
            f"ConvNet3D cannot take clips of shape (T, 3, H, W) = ({frames}, 3, {height}, {width}):"
            f" features after the three blocks are {tuple(size)} (T', H', W'), smaller than the"
            f" head pool {head}; use e.g. (8, 3, 64, 64) or (16, 3, 112, 112)"
        )
    return (WIDTHS[-1], *size)


class ConvNet3D(nn.Module):
    """Three (Conv3d, ReLU, MaxPool3d) blocks, then avg-pool, dropout, 1x1x1 conv, max over time.

    Takes clips (B, T, 3, H, W) fixed at construction, since the head pool and ``embed_dim``
    depend on them.
    """

    input_kind = "clip"

    def __init__(
        self, num_classes: int, clip_shape: tuple[int, int, int, int], *, dropout: float = 0.5
    ) -> None:
        super().__init__()
        frames, _, height, width = clip_shape
        self.clip_shape = tuple(clip_shape)
        self.num_classes = num_classes
        features = feature_shape(frames, height, width)
        self.embed_dim = features[0] * features[1] * features[2] * features[3]
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch, pool in zip(WIDTHS, POOLS, strict=True):
            layers += [
                nn.Conv3d(in_ch, out_ch, CONV_KERNEL, stride=CONV_STRIDE, padding=CONV_PAD),
                nn.ReLU(inplace=True),
                nn.MaxPool3d(pool),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.head_pool = nn.AvgPool3d(_head_pool(height), stride=1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv3d(in_ch, num_classes, kernel_size=1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.clip_shape, "ConvNet3D")
        x = x.permute(0, 2, 1, 3, 4)  # Conv3d wants (B, 3, T, H, W)
        blocks = self._channels_last_blocks(x)
        if not blocks:
            return self.features(x)
        split = 3 * blocks  # (conv, relu, pool) per block
        leading = self.features[:split](x.contiguous(memory_format=torch.channels_last_3d))
        # NCDHW again for what follows: the later blocks, and the head, whose dropout then
        # draws the same masks in either layout
        return self.features[split:](leading.contiguous())

    def _channels_last_blocks(self, x: torch.Tensor) -> int:
        """How many leading blocks run channels-last on a CPU, where oneDNN's conv and pool
        kernels can be faster (bench/layouts.py measures each case):

        - with weights that are not the module's own (``functional_call``: MTT's unrolled
          student, FRePo's pool, the protocol's repeats stacked under vmap, which cannot
          take channels-last tensors): none. MTT's iteration measured the same either way.
        - with AVX-512: all three, with or without a graph. On a Xeon, over several runs:
          graph-free features 0.60-0.81x NCHW's time, a training step 0.86-0.97x.
        - otherwise (AVX2): the first block without a graph, none with one. On an AVX2 EPYC
          the first block was ~1.5x faster channels-last, the later ones were not (the whole
          embedding 0.92x at 8x64²), and with a graph both layouts took the same time.
        """
        if x.device.type != "cpu" or not isinstance(self.classifier.weight, nn.Parameter):
            return 0
        if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
            return len(WIDTHS)
        return 0 if torch.is_grad_enabled() else 1

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.dropout(self.head_pool(self._features(x))))
        # Space is already 1x1 at the two standard sizes; averaging only matters for larger
        # frames. The max over time keeps the most confident temporal window.
        return out.mean(dim=(3, 4)).amax(dim=2)


@register_model("convnet3d")
def _convnet3d(*, num_classes: int, clip_shape: tuple[int, int, int, int], **kw) -> ConvNet3D:
    return ConvNet3D(num_classes, clip_shape, **kw)
