"""Networks are picked by name so configs, Ray jobs and tests never import classes directly.

A factory is any callable ``factory(*, num_classes, clip_shape, **kwargs) -> nn.Module``.
Every factory receives the full clip shape ``(T, 3, H, W)``; image (2-D) nets take
``(3, H, W)`` from it themselves, so callers never need to know a net's input kind.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from s2d_ray.models._shapes import as_clip_shape
from s2d_ray.models.seeded_init import init_parameters_
from s2d_ray.seeding import torch_generator

Factory = Callable[..., nn.Module]

MODELS: dict[str, Factory] = {}

# Init draws use their own named stream so that a seed shared with, say, data sampling
# does not produce correlated weights and samples.
_INIT_STREAM = "model-init"


def register_model(name: str) -> Callable[[Factory], Factory]:
    """Decorator adding ``factory`` to :data:`MODELS` under ``name`` (names are unique)."""

    def add(factory: Factory) -> Factory:
        if name in MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        MODELS[name] = factory
        return factory

    return add


def create(
    name: str,
    *,
    num_classes: int,
    clip_shape: tuple[int, int, int, int],
    seed: int | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build the registered network ``name`` for clips of shape ``(T, 3, H, W)``.

    With ``seed``, parameters come from a private generator (the global RNG is left
    exactly as it was), so equal seeds give bit-identical weights on any machine.
    """
    factory = MODELS.get(name)
    if factory is None:
        raise ValueError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    shape = as_clip_shape(clip_shape)
    if seed is None:
        return factory(num_classes=num_classes, clip_shape=shape, **kwargs)
    # Construction runs PyTorch's default init on the global RNG; fork it so that the
    # caller's random stream is unaffected, then overwrite with the seeded draws.
    with torch.random.fork_rng(devices=[]):
        model = factory(num_classes=num_classes, clip_shape=shape, **kwargs)
    init_parameters_(model, torch_generator(seed, _INIT_STREAM))
    return model
