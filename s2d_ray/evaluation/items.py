"""How a synthetic set trains a network: what one epoch of the evaluation protocol sees.

* Full videos: the stored videos, every epoch.
* Still images (a static memory): each still repeated over the clip's T frames.
* An S2D memory, ``pairs="redraw"`` (the default, as the reference used its sets): each epoch,
  one static x dynamic pair per video slot (C * vpc items), drawn afresh from (seed, epoch),
  with H run once over all slots in one batch; an epoch costs what a plain set of C * vpc
  videos costs. ``pairs="all"``: every pair of each slot's groups, fixed for all epochs (a
  2:2 memory then gives 4x the items, and 4x the SGD steps per epoch). With 1:1 memories both
  rules are the same one video per slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from s2d_ray.seeding import torch_generator
from s2d_ray.synthetic import S2DMemory, SyntheticImages, SyntheticSet

# epoch -> (items, labels) on the device
EpochDraw = Callable[[int], tuple[torch.Tensor, torch.Tensor]]
Pairs = Literal["redraw", "all"]


def as_videos(synthetic: SyntheticSet, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item of the set as training videos (an S2D memory: every pair), fixed."""
    with torch.no_grad():
        items, labels = synthetic.materialize()
    if isinstance(synthetic, SyntheticImages):
        items = items.unsqueeze(1).expand(-1, frames, -1, -1, -1)
    return items.detach(), labels


def redraws_pairs(synthetic: SyntheticSet, pairs: Pairs) -> bool:
    """Whether the set's items change from epoch to epoch under ``pairs``."""
    if pairs != "redraw" or not isinstance(synthetic, S2DMemory):
        return False
    return synthetic.pairs()[0].numel() > synthetic.num_classes * synthetic.vpc


def epoch_draw(
    synthetic: SyntheticSet,
    frames: int,
    *,
    pairs: Pairs = "redraw",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[EpochDraw, int]:
    """(draw, items per epoch): ``draw(epoch)`` gives the epoch's training videos and labels."""
    device = torch.device(device)
    if not redraws_pairs(synthetic, pairs):
        items, labels = as_videos(synthetic, frames)
        items, labels = items.to(device).float(), labels.detach().to(device)
        return (lambda epoch: (items, labels)), len(labels)
    memory = synthetic.to(device)

    def draw(epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            items, labels = memory.materialize(torch_generator(seed, "eval-pairs", epoch))
        return items.float(), labels.detach()

    return draw, memory.num_classes * memory.vpc
