"""Distribution matching for videos: DM and S2D-DM (SPEC §4).

Each iteration draws a fresh, frozen, randomly initialised ConvNet3D and, for every class c,
adds ‖mean embed(real clips of c) − mean embed(synthetic videos of c)‖² to the loss; one
optimiser step follows. DM learns full videos initialised from random real clips (SGD momentum
0.5, ``lr_img``); S2D-DM keeps the static memory of stage 1 frozen and learns the dynamic
memory (``lr_dynamic``) and the integrator H (``lr_hal``) with SGD momentum 0.95, re-drawing
the static/dynamic pairing at every iteration.

With ``segments`` > 1 (temporal compression, ``synthetic.temporal``) the matching is
pairwise: each real segment is matched with its synthetic segment (expanded to the real
length), through the iteration's network built for clips of that length (same seed, so the
same weights), and the losses are summed. ConvNet3D needs 8 frames at 64² (16 at 112²), so
short segments call for ``network: convnet_gru`` (the paper's temporal study used CNN+GRU).
"""

from __future__ import annotations

import torch
from pydantic import Field

from s2d_ray.methods.init import (
    IntegratorInit,
    build_memory,
    real_initialised_videos,
    s2d_optimizers,
)
from s2d_ray.methods.registry import DistillContext, DistillMethod, register_method
from s2d_ray.models import create
from s2d_ray.seeding import derive_seed, torch_generator
from s2d_ray.synthetic.temporal import TemporalConfig, segment_bounds


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
    integrator_init: IntegratorInit = "default"
    network: str = "convnet3d"


def matching_network(
    name: str, context: DistillContext, iteration: int, frames: int | None = None
) -> torch.nn.Module:
    """The iteration's fresh random network, frozen (seeded by seed and iteration), for
    clips of ``frames`` (default: the real clips')."""
    real = context.real
    t, c, h, w = real.clip_shape
    try:
        net = create(
            name,
            num_classes=real.num_classes,
            clip_shape=(frames or t, c, h, w),
            seed=derive_seed(context.seed, "dm-network", iteration),
        )
    except ValueError as exc:
        raise ValueError(
            f"{exc}; a segment of {frames or t} frames is too short for {name}: match "
            "segments with network convnet_gru (--network convnet_gru) or use fewer segments"
        ) from None
    return net.to(context.device).eval().requires_grad_(False)


REAL_CHUNK = 2  # clips per no-graph forward: small activations are reused, not re-mapped

Spans = list[tuple[int, int]]


@torch.no_grad()
def real_mean_embeddings(
    nets: list[torch.nn.Module],
    spans: Spans,
    context: DistillContext,
    label: int,
    n: int,
    generator,
) -> list[torch.Tensor]:
    """Per segment, the mean embedding of a real batch of class ``label`` (``n`` distinct
    videos, one random clip and one flip each: ``RealData.class_clips``), embedded a few
    clips at a time from uint8: every activation stays small enough for the allocator to
    reuse (large ones are mapped and page-faulted afresh on each call, measured ~20 % slower
    on CPU)."""
    real = context.real
    frames = real.class_clips(label, n, generator)
    totals: list[torch.Tensor | None] = [None] * len(spans)
    for start in range(0, n, REAL_CHUNK):
        clips = real.to_float(frames[start : start + REAL_CHUNK], generator, flip=True)
        for k, (net, (a, b)) in enumerate(zip(nets, spans, strict=True)):
            part = net.embed(clips[:, a:b]).sum(0)
            totals[k] = part if totals[k] is None else totals[k] + part
    return [total / n for total in totals]


def mean_embedding_loss(
    nets: list[torch.nn.Module],
    spans: Spans,
    synthetic: torch.Tensor,
    labels: torch.Tensor,
    context: DistillContext,
    batch_real: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Σ_segments Σ_c ‖mean embed(real of c) − mean embed(synthetic of c)‖² over each
    segment's span; real clips embed without a graph, one class at a time. One span
    (0, T) is whole-clip DM."""
    embedded = [net.embed(synthetic[:, a:b]) for net, (a, b) in zip(nets, spans, strict=True)]
    loss = embedded[0].new_zeros(())
    for c in range(context.real.num_classes):
        real_means = real_mean_embeddings(nets, spans, context, c, batch_real, generator)
        for real_mean, syn in zip(real_means, embedded, strict=True):
            loss = loss + (real_mean - syn[labels == c].mean(0)).square().sum()
    return loss


class _DistributionMatching(DistillMethod):
    def _spans(self) -> Spans:
        return segment_bounds(self.context.real.clip_shape[0], self.config.segments)

    def loss(self, iteration: int) -> torch.Tensor:
        generator = torch_generator(self.context.seed, "dm-iteration", iteration)
        spans = self._spans()
        lengths = {b - a for a, b in spans}
        by_length = {
            n: matching_network(self.config.network, self.context, iteration, n) for n in lengths
        }
        nets = [by_length[b - a] for a, b in spans]
        videos, labels = self.synthetic.materialize(generator)
        return mean_embedding_loss(
            nets, spans, videos, labels, self.context, self.config.batch_real, generator
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
