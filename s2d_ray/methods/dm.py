"""Distribution matching for videos: DM and S2D-DM (SPEC §4).

Each iteration draws a fresh, frozen, randomly initialised ConvNet3D and, for every class c,
adds ‖mean embed(real clips of c) − mean embed(synthetic videos of c)‖² to the loss; one
optimiser step follows. DM learns full videos initialised from random real clips (SGD momentum
0.5, ``lr_img``); S2D-DM keeps the static memory of stage 1 frozen and learns the dynamic
memory (``lr_dynamic``) and the integrator H (``lr_hal``) with SGD momentum 0.95, re-drawing
the static/dynamic pairing at every iteration.
"""

from __future__ import annotations

import torch
from pydantic import Field

from s2d_ray.methods.init import build_memory, real_initialised_videos, s2d_optimizers
from s2d_ray.methods.registry import DistillContext, DistillMethod, register_method
from s2d_ray.models import create
from s2d_ray.seeding import derive_seed, torch_generator
from s2d_ray.synthetic.temporal import TemporalConfig


class DMConfig(TemporalConfig):
    lr_img: float = Field(default=30.0, gt=0)
    momentum: float = Field(default=0.5, ge=0, lt=1)
    batch_real: int = Field(default=64, ge=1)
    network: str = "convnet3d"


class S2DDMConfig(TemporalConfig):
    lr_dynamic: float = Field(default=1e-4, gt=0)
    lr_hal: float = Field(default=1e-5, gt=0)
    momentum: float = Field(default=0.95, ge=0, lt=1)
    batch_real: int = Field(default=64, ge=1)
    dpc: int = Field(default=1, ge=0, description="dynamic maps per class; 0: static only")
    integrator: str = "conv3d"
    network: str = "convnet3d"


def matching_network(name: str, context: DistillContext, iteration: int) -> torch.nn.Module:
    """The iteration's fresh random network, frozen (seeded by seed and iteration)."""
    real = context.real
    net = create(
        name,
        num_classes=real.num_classes,
        clip_shape=real.clip_shape,
        seed=derive_seed(context.seed, "dm-network", iteration),
    )
    return net.to(context.device).eval().requires_grad_(False)


REAL_CHUNK = 2  # clips per no-graph forward: small activations are reused, not re-mapped


@torch.no_grad()
def real_mean_embedding(
    net: torch.nn.Module, context: DistillContext, label: int, n: int, generator
) -> torch.Tensor:
    """Mean embedding of ``n`` random real clips of class ``label``, embedded a few clips at a
    time from uint8: every activation stays small enough for the allocator to reuse (large
    ones are mapped and page-faulted afresh on each call, measured ~20 % slower on CPU)."""
    real = context.real
    frames = real.sampler.sample(label, n, generator)
    total = None
    for start in range(0, n, REAL_CHUNK):
        part = net.embed(real.to_float(frames[start : start + REAL_CHUNK])).sum(0)
        total = part if total is None else total + part
    return total / n


def mean_embedding_loss(
    net: torch.nn.Module,
    synthetic: torch.Tensor,
    labels: torch.Tensor,
    context: DistillContext,
    batch_real: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Σ_c ‖mean embed(real of c) − mean embed(synthetic of c)‖²; real clips embed without
    a graph, one class at a time."""
    embedded = net.embed(synthetic)
    loss = embedded.new_zeros(())
    for c in range(context.real.num_classes):
        real_mean = real_mean_embedding(net, context, c, batch_real, generator)
        loss = loss + (real_mean - embedded[labels == c].mean(0)).square().sum()
    return loss


class _DistributionMatching(DistillMethod):
    def loss(self, iteration: int) -> torch.Tensor:
        generator = torch_generator(self.context.seed, "dm-iteration", iteration)
        net = matching_network(self.config.network, self.context, iteration)
        videos, labels = self.synthetic.materialize(generator)
        return mean_embedding_loss(
            net, videos, labels, self.context, self.config.batch_real, generator
        )


@register_method("dm")
class DM(_DistributionMatching):
    """DM baseline: real-initialised full videos."""

    Config = DMConfig

    def __init__(self, config: DMConfig, context: DistillContext) -> None:
        super().__init__(config, context)
        self.synthetic = real_initialised_videos(config, context)
        self.optimizers = [
            torch.optim.SGD([self.synthetic.items], lr=config.lr_img, momentum=config.momentum)
        ]


@register_method("s2d-dm")
class S2DDM(_DistributionMatching):
    """S2D stage 2 with DM: learn the dynamic memory and H on the frozen static memory."""

    Config = S2DDMConfig
    needs_static = True

    def __init__(self, config: S2DDMConfig, context: DistillContext) -> None:
        super().__init__(config, context)
        self.synthetic = build_memory(config, context)
        self.optimizers = s2d_optimizers(self.synthetic, config)
        self.iterative = bool(self.optimizers)  # static only (dpc = 0): nothing to learn
