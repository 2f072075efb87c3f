"""The method registry: a method is a small component with its own config, a synthetic set it
builds from real data, and a ``step`` that improves it (coresets are built once and have none).

    method = create_method("s2d-dm", config, context)
    for it in range(iterations):
        metrics = method.step(it)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from s2d_ray.config import StrictConfig
from s2d_ray.methods.real import RealData
from s2d_ray.synthetic import SyntheticSet


@dataclass
class DistillContext:
    """What a method may use besides its config: real data, the seed and its inputs."""

    real: RealData
    ipc: int
    seed: int = 0
    static: SyntheticSet | None = None  # S2D stage-2 methods: the frozen static memory
    static_manifest: dict = field(default_factory=dict)
    iterations: int = 0  # the run's length, for schedules over it (0: none)

    @property
    def device(self) -> torch.device:
        return self.real.device


class DistillMethod:
    """Base class; subclasses set ``name``, ``Config`` and build ``self.synthetic``."""

    name: ClassVar[str]
    Config: ClassVar[type[StrictConfig]]
    iterative: ClassVar[bool] = True
    needs_static: ClassVar[bool] = False

    def __init__(self, config: StrictConfig, context: DistillContext) -> None:
        self.config, self.context = config, context
        self.synthetic: SyntheticSet
        self.optimizers: list[torch.optim.Optimizer] = []

    def loss(self, iteration: int) -> torch.Tensor:
        """The matching loss of ``iteration``. Its randomness (networks, real batches,
        pairings) comes only from (seed, iteration), so a resumed run repeats an
        uninterrupted one exactly, and a given iteration can be re-evaluated as a probe."""
        raise NotImplementedError(f"{self.name} is built once and has no steps")

    def step(self, iteration: int) -> dict[str, float]:
        """One optimisation step on ``loss(iteration)``; returns at least ``loss``."""
        loss = self.loss(iteration)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        return {"loss": float(loss.detach())}

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Learnt tensors outside the synthetic set (e.g. MTT's syn_lr), checkpointed too."""
        return {}

    def eval_overrides(self) -> dict:
        """Evaluation settings this method's sets call for (e.g. MTT's learned lr)."""
        return {}

    def learnable(self) -> list[torch.Tensor]:
        return [p for group in self.optimizers for g in group.param_groups for p in g["params"]]


METHODS: dict[str, type[DistillMethod]] = {}  # video sets: s2d distill --method
STATIC_METHODS: dict[str, type[DistillMethod]] = {}  # S2D stage 1: s2d static


def register_method(
    name: str, registry: dict[str, type[DistillMethod]] = METHODS
) -> Callable[[type[DistillMethod]], type[DistillMethod]]:
    def add(cls: type[DistillMethod]) -> type[DistillMethod]:
        if name in registry:
            raise ValueError(f"method {name!r} is already registered")
        cls.name = name
        registry[name] = cls
        return cls

    return add


def get_method(
    name: str, registry: dict[str, type[DistillMethod]] = METHODS
) -> type[DistillMethod]:
    if name not in registry:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(sorted(registry))}")
    return registry[name]
