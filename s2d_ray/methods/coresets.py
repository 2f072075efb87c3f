"""Coresets: ipc real videos per class, picked at random, by herding or by k-center (SPEC §4).

Candidates are every training video of a class (one of its stored clips each). Herding and
k-center work on features of a network: a randomly initialised ConvNet3D (default) or an
expert's snapshot from a trajectory store (``features="expert"``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from s2d_ray.config import StrictConfig
from s2d_ray.methods.registry import DistillContext, DistillMethod, register_method
from s2d_ray.models import create
from s2d_ray.seeding import derive_seed
from s2d_ray.synthetic import SyntheticVideos


def herding(features: torch.Tensor, k: int) -> list[int]:
    """Greedy herding: each pick brings the running mean of the picks closest to the class
    mean (Welling 2009). Returns ``k`` distinct row indices in pick order."""
    target = features.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(target)
    available = torch.ones(len(features), dtype=torch.bool)
    for i in range(1, k + 1):
        gaps = ((total + features) / i - target).norm(dim=1)
        gaps[~available] = float("inf")
        pick = int(gaps.argmin())
        chosen.append(pick)
        total += features[pick]
        available[pick] = False
    return chosen


def kcenter(features: torch.Tensor, k: int) -> list[int]:
    """Greedy k-center on true pairwise distances: start from the point nearest the mean,
    then repeatedly add the point farthest from everything chosen (max-min). The reference
    measured distances to the class mean only, which is not k-center."""
    distances = torch.cdist(features, features)
    first = int((features - features.mean(0)).norm(dim=1).argmin())
    chosen = [first]
    nearest = distances[first].clone()
    for _ in range(k - 1):
        nearest[chosen] = -1.0
        pick = int(nearest.argmax())
        chosen.append(pick)
        nearest = torch.minimum(nearest, distances[pick])
    return chosen


class CoresetConfig(StrictConfig):
    features: Literal["random", "expert"] = "random"
    experts: str | None = Field(default=None, description="trajectory store, for 'expert'")
    expert_id: int = 0
    expert_epoch: int = Field(default=-1, description="-1: the last snapshot")
    batch_size: int = Field(default=64, ge=1)


class Coreset(DistillMethod):
    """Selects ipc real videos per class once; ``select`` is the rule."""

    Config = CoresetConfig
    iterative = False

    def __init__(self, config: CoresetConfig, context: DistillContext) -> None:
        super().__init__(config, context)
        real = context.real
        if self.name == "random":
            clips, _ = real.random_videos(context.ipc, context.seed)
            self.synthetic = SyntheticVideos(clips, real.num_classes)
            return
        network, chosen = self._network(), []
        for c in range(real.num_classes):
            rows = real.one_clip_per_video(c, context.seed)
            if len(rows) < context.ipc:
                raise ValueError(
                    f"class {real.shards.classes[c]!r} has {len(rows)} training videos, "
                    f"fewer than ipc={context.ipc}"
                )
            picks = self.select(self._features(network, rows), context.ipc)
            chosen.append(real.to_float(real.train.batch(rows[picks])[0]))
        self.synthetic = SyntheticVideos(torch.cat(chosen), real.num_classes)

    def select(self, features: torch.Tensor, k: int) -> list[int]:
        """Indices of the ``k`` chosen candidates, from their features (n, d)."""
        raise NotImplementedError

    def _network(self) -> torch.nn.Module:
        real, config = self.context.real, self.config
        model = create(
            "convnet3d",
            num_classes=real.num_classes,
            clip_shape=real.clip_shape,
            seed=derive_seed(self.context.seed, "coreset-features"),
        )
        if config.features == "expert":
            from s2d_ray.experts.store import TrajectoryStore

            if not config.experts:
                raise ValueError("features='expert' needs --experts STORE")
            store = TrajectoryStore.open(config.experts)
            info = store.expert(config.expert_id)
            if info is None:
                raise ValueError(f"expert {config.expert_id} is not in {config.experts}")
            epoch = info.epochs_completed if config.expert_epoch < 0 else config.expert_epoch
            flat = store.load_snapshot(config.expert_id, epoch)
            torch.nn.utils.vector_to_parameters(flat, model.parameters())
        return model.to(self.context.device).eval()

    @torch.no_grad()
    def _features(self, network: torch.nn.Module, rows: np.ndarray) -> torch.Tensor:
        real, out = self.context.real, []
        for start in range(0, len(rows), self.config.batch_size):
            frames, _ = real.train.batch(rows[start : start + self.config.batch_size])
            out.append(network.embed(real.to_float(frames)).float().cpu())
        return torch.cat(out)


@register_method("random")
class RandomCoreset(Coreset):
    """ipc random real videos per class (``RealData.random_videos``, also the same-size
    baseline of every result)."""


@register_method("herding")
class HerdingCoreset(Coreset):
    def select(self, features, k):
        return herding(features, k)


@register_method("kcenter")
class KCenterCoreset(Coreset):
    def select(self, features, k):
        return kcenter(features, k)
