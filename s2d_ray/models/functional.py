"""Flat-parameter view of a network, for MTT-style unrolled training.

MTT trains a student for many steps on a single 1-D parameter vector and backpropagates
through all of them, so the network must be callable with parameters that are not its own.

Order: the flat vector concatenates parameters in ``model.named_parameters()`` order, each
flattened row-major. That order is fixed by module construction, so vectors saved by one
process (expert trajectories) can be loaded by another that builds the same model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


def param_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Name -> shape of every parameter, in flat-vector order."""
    return {name: p.shape for name, p in model.named_parameters()}


def flatten_params(model: nn.Module) -> torch.Tensor:
    """A detached 1-D copy of all parameters (on their device and dtype)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflatten(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Name -> view of ``flat`` shaped like that parameter; differentiable w.r.t. ``flat``."""
    shapes = param_shapes(model)
    sizes = [s.numel() for s in shapes.values()]
    if flat.ndim != 1 or flat.numel() != sum(sizes):
        raise ValueError(
            f"flat must be 1-D with {sum(sizes)} elements for {type(model).__name__}, "
            f"got shape {tuple(flat.shape)}"
        )
    chunks = torch.split(flat, sizes)
    return {name: c.view(shape) for (name, shape), c in zip(shapes.items(), chunks, strict=True)}


class _Method(nn.Module):
    """functional_call only runs ``forward``; this routes it to another method (e.g. embed)."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(x)


def functional_forward(
    model: nn.Module, flat: torch.Tensor, x: torch.Tensor, *, method: str = "forward"
) -> torch.Tensor:
    """``model.<method>(x)`` computed with parameters taken from ``flat``.

    Buffers (e.g. BatchNorm running stats) are the model's own and are updated in place in
    train mode, exactly as a normal call would. ``model``'s own parameters are not touched.
    """
    if method not in ("forward", "embed"):
        raise ValueError(f"method must be 'forward' or 'embed', got {method!r}")
    params = unflatten(model, flat)
    if method == "forward":
        return functional_call(model, params, (x,))
    wrapped = _Method(model, method)
    return functional_call(wrapped, {f"model.{k}": v for k, v in params.items()}, (x,))
