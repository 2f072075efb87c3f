"""Re-initialise a network from a private generator, reproducing PyTorch's default schemes.

PyTorch's own ``reset_parameters`` always draws from the global RNG; seeded creation must not,
so the same draws are redone here with ``generator=``. Modules with parameters of an unknown
type raise instead of silently keeping globally-seeded weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


@torch.no_grad()
def init_parameters_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Draw every parameter of ``model`` from ``generator`` in ``modules()`` order."""
    for module in model.modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if isinstance(module, _AFFINE):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                module.bias.uniform_(-bound, bound, generator=generator)
        elif isinstance(module, nn.RNNBase):
            bound = 1.0 / math.sqrt(module.hidden_size)
            for param in module.parameters(recurse=False):
                param.uniform_(-bound, bound, generator=generator)
        elif isinstance(module, _NORMS):
            module.reset_parameters()  # ones and zeros: nothing random to seed
        else:
            raise TypeError(
                f"no seeded init for {type(module).__name__}; add it to s2d_ray.models.seeded_init"
            )
    return model
