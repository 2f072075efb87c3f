"""Integrators H: (static image, dynamic map) -> video, shared by all classes (SPEC §3).

Input is concat(static repeated over T, dynamic map) along channels, (N, 4, T, H, W) for
Conv3d; the output is a (N, T, 3, H, W) video in the same normalised space as the static
memory. Every integrator keeps T, H and W.

* ``conv3d`` (the paper's default): one Conv3d(4 -> 3, kernel 3, padding 1), 327 parameters.
* ``conv3d_tconv`` (the paper's larger H; its exact layout is unpublished): Conv3d(4 -> 8,
  kernel 3, padding 1) + ReLU, then ConvTranspose3d(8 -> 3, kernel 3, stride 1, padding 1),
  1523 parameters. Stride 1 keeps the shape; the transposed conv spreads each of the 8 middle
  features back over its 3x3x3 neighbourhood, the "decoder" half of the block pair.
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


def create_integrator(name: str, generator: torch.Generator | None = None) -> nn.Module:
    """Build integrator ``name``; with ``generator`` its init is seeded privately."""
    if name not in INTEGRATORS:
        raise ValueError(f"unknown integrator {name!r}; registered: {sorted(INTEGRATORS)}")
    with torch.random.fork_rng(devices=[]):
        module = INTEGRATORS[name]()
    if generator is not None:
        from s2d_ray.models.seeded_init import init_parameters_

        init_parameters_(module, generator)
    return module


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
