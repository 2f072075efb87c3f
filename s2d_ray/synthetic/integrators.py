"""Integrators H: (static image, dynamic map) -> video, shared by all classes (SPEC §3).

Input is concat(static repeated over T, dynamic map) along channels, (N, 4, T, H, W) for
Conv3d; the output is a (N, T, 3, H, W) video in the same normalised space as the static
memory. Every integrator keeps T, H and W.

* ``conv3d`` (the paper's default): one Conv3d(4 -> 3, kernel 3, padding 1), 327 parameters.
* ``conv3d_tconv`` (the paper's larger H; its exact layout is unpublished): Conv3d(4 -> 8,
  kernel 3, padding 1) + ReLU, then ConvTranspose3d(8 -> 3, kernel 3, stride 1, padding 1),
  1523 parameters. Stride 1 keeps the shape; the transposed conv spreads each of the 8 middle
  features back over its 3x3x3 neighbourhood, the "decoder" half of the block pair.

Initialisation (``init``):

* ``default``: PyTorch's (seeded) for every weight, as the reference's H. Such an H is a
  random 3x3x3 filter of the still image plus filtered dynamic noise: the video it makes
  has lost most of what the static memory held (on the embedded set, 3 networks x 60
  epochs on val: 30 % at iteration 0 against 50 % for the still images alone), and the
  short budgets a CPU affords do not learn it back.
* ``identity``: H starts by passing the still image through unchanged (centre tap 1 from
  each colour channel to itself, other static taps and the biases 0) and keeps its default
  weights on the dynamic map, so the first video is the still image plus a little filtered
  noise the dynamic memory learns from its first step. Stage 2 then starts from what
  stage 1 achieved (the same 50 % at iteration 0). For ``conv3d_tconv`` the middle
  channels 0-2 carry +image and 3-5 -image through the ReLU, which the transposed conv
  recombines (relu(x) - relu(-x) = x); middle channels 6-7 keep their default weights on
  the dynamic map (every bias starts at 0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

INTEGRATORS: dict[str, Callable[[], nn.Module]] = {}


def register_integrator(name: str):
    def add(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in INTEGRATORS:
            raise ValueError(f"integrator {name!r} is already registered")
        INTEGRATORS[name] = factory
        return factory

    return add


INITS = ("default", "identity")


def create_integrator(
    name: str, generator: torch.Generator | None = None, init: str = "default"
) -> nn.Module:
    """Build integrator ``name``; with ``generator`` its init is seeded privately; ``init``
    "identity" then makes it pass the still image through (see the module's docstring)."""
    if name not in INTEGRATORS:
        raise ValueError(f"unknown integrator {name!r}; registered: {sorted(INTEGRATORS)}")
    if init not in INITS:
        raise ValueError(f"unknown integrator init {init!r}; one of {INITS}")
    with torch.random.fork_rng(devices=[]):
        module = INTEGRATORS[name]()
    if generator is not None:
        from s2d_ray.models.seeded_init import init_parameters_

        init_parameters_(module, generator)
    if init == "identity":
        _pass_still_through(module.body)
    return module


@torch.no_grad()
def _pass_still_through(body: nn.Module) -> None:
    centre = (1, 1, 1)
    if isinstance(body, nn.Conv3d):
        body.weight[:, :3].zero_()
        for c in range(3):
            body.weight[(c, c, *centre)] = 1.0
        body.bias.zero_()
        return
    first, _, last = body  # conv3d_tconv: Conv3d(4 -> 8), ReLU, ConvTranspose3d(8 -> 3)
    first.weight[:6].zero_()  # middle 0-5 see only the image, ±
    first.weight[6:, :3].zero_()  # middle 6-7 see only the dynamic map
    first.bias.zero_()
    last.weight[:6].zero_()  # ConvTranspose3d weight: (in = 8, out = 3, k, k, k)
    for c in range(3):
        first.weight[(c, c, *centre)] = 1.0
        first.weight[(c + 3, c, *centre)] = -1.0
        last.weight[(c, c, *centre)] = 1.0
        last.weight[(c + 3, c, *centre)] = -1.0
    last.bias.zero_()


class Integrator(nn.Module):
    """Wraps a Conv3d stack with the (static, dynamic) -> video layout changes."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """static (N, 3, H, W), dynamic (N, T, 1, H, W) -> video (N, T, 3, H, W)."""
        frames = dynamic.shape[1]
        still = static.unsqueeze(2).expand(-1, -1, frames, -1, -1)  # (N, 3, T, H, W)
        x = torch.cat([still, dynamic.transpose(1, 2)], dim=1)  # (N, 4, T, H, W)
        return self.body(x).transpose(1, 2)


@register_integrator("conv3d")
def _conv3d() -> nn.Module:
    return Integrator(nn.Conv3d(4, 3, kernel_size=3, padding=1))


@register_integrator("conv3d_tconv")
def _conv3d_tconv() -> nn.Module:
    return Integrator(
        nn.Sequential(
            nn.Conv3d(4, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose3d(8, 3, kernel_size=3, stride=1, padding=1),
        )
    )
