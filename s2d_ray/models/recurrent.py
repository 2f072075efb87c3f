"""CNN+GRU / CNN+LSTM: per-frame 2-D ConvNet features fed to a recurrent layer, for
cross-architecture evaluation of distilled clips.

All layer sizes are derived from the clip shape given at construction (the reference
implementation hard-coded them and crashed on other resolutions).
"""

from __future__ import annotations

import torch
from torch import nn

from s2d_ray.models._shapes import check_input
from s2d_ray.models.convnet import conv_trunk
from s2d_ray.models.registry import register_model

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class ConvRecurrent(nn.Module):
    """Shared ConvNet trunk per frame -> single-layer GRU/LSTM -> linear on the last hidden state.

    H and W are fixed at construction; T may differ from it, as the recurrence is length-free.
    """

    input_kind = "clip"

    def __init__(
        self,
        num_classes: int,
        clip_shape: tuple[int, int, int, int],
        *,
        cell: str = "gru",
        hidden: int = 128,
        depth: int = 3,
        width: int = 128,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown recurrent cell {cell!r}; choose one of {sorted(CELLS)}")
        self.cell = cell
        self.clip_shape = tuple(clip_shape)
        self.num_classes = num_classes
        self.embed_dim = hidden
        self.trunk, frame_dim = conv_trunk(self.clip_shape[1:], depth=depth, width=width, norm=norm)
        self.rnn = CELLS[cell](frame_dim, hidden, num_layers=1, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, (None, *self.clip_shape[1:]), f"ConvRecurrent[{self.cell}]")
        batch, frames = x.shape[:2]
        per_frame = self.trunk(x.flatten(0, 1)).flatten(1).unflatten(0, (batch, frames))
        _, state = self.rnn(per_frame)
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
