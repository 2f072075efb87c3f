"""CNN+GRU / CNN+LSTM: per-frame 2-D ConvNet features fed to a recurrent layer, for
cross-architecture evaluation of distilled clips (SPEC §5).

Defaults reproduce the reference's networks, so cross-architecture numbers compare with the
paper's:

* trunk: ConvNet blocks (conv 3x3, width 128, instance norm, ReLU, avg-pool 2) per frame;
  the frame feature size is f = 128 * (H / 2^depth) * (W / 2^depth) (8192 at 64x64, depth 3);
* hidden size: GRU f // 8, LSTM f (``hidden="reference"``);
* the classifier sees the **mean over time** of the recurrent outputs (``aggregate="mean"``),
  not the last hidden state (``aggregate="last"``, the other common choice).

The reference hard-coded 64x64 inputs and crashed on anything else. Here every size derives
from the clip shape, and the trunk depth comes from the resolution (3 up to 64x64, 4 above, as
ConvNetD4 is used at 112x112): with depth 3 at 112x112 the reference rule would make the
LSTM 5e9 parameters. The reference LSTM at 64x64 is large (537 M parameters, one
forward/backward of 2 clips takes ~30 s on 2 CPU cores); pass ``hidden=`` for a small one.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from s2d_ray.models._shapes import check_input
from s2d_ray.models.convnet import conv_trunk
from s2d_ray.models.registry import register_model

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
AGGREGATES = ("mean", "last")
MAX_RECURRENT_PARAMS = 1_000_000_000  # beyond this the layer cannot train on one device


def reference_hidden(cell: str, frame_features: int) -> int:
    """The reference's hidden sizes: GRU features // 8, LSTM features."""
    return frame_features // 8 if cell == "gru" else frame_features


def default_depth(height: int) -> int:
    return 3 if height <= 64 else 4


def recurrent_params(cell: str, inputs: int, hidden: int) -> int:
    """Parameters of a one-layer GRU/LSTM (two bias vectors per gate, as PyTorch has)."""
    gates = 3 if cell == "gru" else 4
    return gates * (inputs * hidden + hidden * hidden + 2 * hidden)


class ConvRecurrent(nn.Module):
    """Shared ConvNet trunk per frame -> single-layer GRU/LSTM -> linear classifier.

    H and W are fixed at construction; T may differ from it, as the recurrence is length-free.
    """

    input_kind = "clip"

    def __init__(
        self,
        num_classes: int,
        clip_shape: tuple[int, int, int, int],
        *,
        cell: str = "gru",
        hidden: int | Literal["reference"] = "reference",
        aggregate: str = "mean",
        depth: int | None = None,
        width: int = 128,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown recurrent cell {cell!r}; choose one of {sorted(CELLS)}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        self.cell, self.aggregate = cell, aggregate
        self.clip_shape = tuple(clip_shape)
        self.num_classes = num_classes
        depth = default_depth(self.clip_shape[2]) if depth is None else depth
        self.trunk, frame_dim = conv_trunk(self.clip_shape[1:], depth=depth, width=width, norm=norm)
        if hidden == "reference":
            hidden = reference_hidden(cell, frame_dim)
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive int or 'reference', got {hidden!r}")
        size = recurrent_params(cell, frame_dim, hidden)
        if size > MAX_RECURRENT_PARAMS:
            raise ValueError(
                f"a {cell.upper()} with {frame_dim} inputs and hidden {hidden} has {size:.2e} "
                f"parameters for clips {self.clip_shape}; pass a smaller hidden= or a deeper "
                "trunk (depth=)"
            )
        self.embed_dim = hidden
        self.rnn = CELLS[cell](frame_dim, hidden, num_layers=1, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, (None, *self.clip_shape[1:]), f"ConvRecurrent[{self.cell}]")
        batch, frames = x.shape[:2]
        per_frame = self.trunk(x.flatten(0, 1)).flatten(1).unflatten(0, (batch, frames))
        outputs, state = self.rnn(per_frame)
        if self.aggregate == "mean":
            return outputs.mean(dim=1)
        last = state[0] if self.cell == "lstm" else state  # LSTM state is (h_n, c_n)
        return last[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@register_model("convnet_gru")
def _convnet_gru(*, num_classes: int, clip_shape: tuple[int, int, int, int], **kw):
    return ConvRecurrent(num_classes, clip_shape, cell="gru", **kw)


@register_model("convnet_lstm")
def _convnet_lstm(*, num_classes: int, clip_shape: tuple[int, int, int, int], **kw):
    return ConvRecurrent(num_classes, clip_shape, cell="lstm", **kw)
