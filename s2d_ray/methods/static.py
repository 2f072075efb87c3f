"""Static learning, S2D stage 1: distil spc still images per class from single real frames.

The network is the 2-D ConvNet with its depth chosen from the resolution (ConvNet-D3 up to
64x64, ConvNet-D4 above, as SPEC §2 uses D4 at 112x112), freshly initialised every
iteration. Images start from real frames (one random frame of a random clip of the class).

* ``dc`` (gradient matching, Zhao et al. 2021): per class, the distance between the
  gradients of the cross-entropy on real and on synthetic frames, summed over layers of
  Σ_out-channels (1 − cos); one-dimensional parameters (biases, norm scales) are ignored.
  DC's loops (SPEC §4, ``dc_loops``): an iteration takes ``outer`` matching steps on its one
  fresh network and, between them, trains that network ``inner`` epochs on the synthetic
  images (SGD, lr_net 0.01, batches of 256); one step and no training below 10 images per
  class. Real batches of 256 frames per class (the paper's default).
* ``dm`` (distribution matching): per class, ‖mean embed(real) − mean embed(synthetic)‖².
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from s2d_ray.config import StrictConfig
from s2d_ray.methods.registry import (
    STATIC_METHODS,
    DistillContext,
    DistillMethod,
    register_method,
)
from s2d_ray.models import create
from s2d_ray.models.recurrent import default_depth
from s2d_ray.seeding import derive_seed, torch_generator
from s2d_ray.synthetic import SyntheticImages


class StaticConfig(StrictConfig):
    lr_img: float = Field(default=0.1, gt=0, description="DC 0.1, DM 1.0 (their papers)")
    momentum: float = Field(default=0.5, ge=0, lt=1)
    batch_real: int = Field(default=64, ge=1)


class StaticDCConfig(StaticConfig):
    outer_loop: int | None = Field(default=None, ge=1, description="None: DC's for the spc")
    inner_loop: int | None = Field(default=None, ge=0, description="None: DC's for the spc")
    lr_net: float = Field(default=0.01, gt=0, description="the inner loop's SGD lr")
    batch_train: int = Field(default=256, ge=1, description="the inner loop's batch")


# DC's get_loops: images per class -> (outer matching steps, inner training epochs)
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def dc_loops(spc: int) -> tuple[int, int]:
    """DC's (outer, inner) loops for ``spc`` images per class: the entry at or below it."""
    return DC_LOOPS[max(k for k in DC_LOOPS if k <= max(spc, 1))]


def real_frames(context: DistillContext, label: int, n: int, generator) -> torch.Tensor:
    """``n`` normalised frames of class ``label``: a random frame of each of n random clips."""
    return context.real.class_frames(label, n, generator)


def frame_network(context: DistillContext, iteration: int) -> torch.nn.Module:
    real = context.real
    net = create(
        "convnet",
        num_classes=real.num_classes,
        clip_shape=real.clip_shape,
        depth=default_depth(real.clip_shape[2]),
        seed=derive_seed(context.seed, "static-network", iteration),
    )
    return net.to(context.device)


def gradient_distance(synthetic: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """DC's layer-wise distance: Σ over output channels of (1 − cos), 1-D tensors skipped."""
    total = synthetic[0].new_zeros(())
    for gs, gr in zip(synthetic, real, strict=True):
        if gs.dim() == 1:
            continue
        gs, gr = gs.flatten(1), gr.flatten(1)
        cos = (gs * gr).sum(1) / (gs.norm(dim=1) * gr.norm(dim=1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


class _StaticLearning(DistillMethod):
    Config = StaticConfig

    def __init__(self, config: StaticConfig, context: DistillContext) -> None:
        super().__init__(config, context)
        real = context.real
        generator = torch_generator(context.seed, "static-init")
        frames = [real_frames(context, c, context.ipc, generator) for c in range(real.num_classes)]
        self.synthetic = SyntheticImages(torch.cat(frames), real.num_classes).to(context.device)
        self.optimizers = [
            torch.optim.SGD([self.synthetic.items], lr=config.lr_img, momentum=config.momentum)
        ]

    def loss(self, iteration: int) -> torch.Tensor:
        generator = torch_generator(self.context.seed, "static-iteration", iteration)
        return self.matching_loss(frame_network(self.context, iteration), generator)

    def matching_loss(self, net: torch.nn.Module, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


@register_method("dc", STATIC_METHODS)
class StaticDC(_StaticLearning):
    Config = StaticDCConfig

    def __init__(self, config: StaticDCConfig, context: DistillContext) -> None:
        super().__init__(config, context)
        outer, inner = dc_loops(context.ipc)
        self.outer = config.outer_loop or outer
        self.inner = inner if config.inner_loop is None else config.inner_loop

    def step(self, iteration: int) -> dict[str, float]:
        """``outer`` matching steps on one fresh network, trained ``inner`` epochs on the
        synthetic images between them; returns the mean matching loss."""
        seed = self.context.seed
        generator = torch_generator(seed, "static-iteration", iteration)
        order = torch_generator(seed, "dc-inner", iteration)
        net = frame_network(self.context, iteration)
        net_optimizer = torch.optim.SGD(net.parameters(), lr=self.config.lr_net)
        losses = []
        for outer in range(self.outer):
            loss = self.matching_loss(net, generator)
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in self.optimizers:
                optimizer.step()
            losses.append(float(loss.detach()))
            if outer < self.outer - 1:
                self._train_network(net, net_optimizer, order)
        return {"loss": sum(losses) / len(losses)}

    def _train_network(self, net, optimizer, order: torch.Generator) -> None:
        """DC's inner loop: ``inner`` epochs of the network on the synthetic images."""
        items = self.synthetic.items.detach()
        labels = self.synthetic.labels.to(items.device)
        for _ in range(self.inner):
            perm = torch.randperm(len(labels), generator=order).to(items.device)
            for start in range(0, len(perm), self.config.batch_train):
                idx = perm[start : start + self.config.batch_train]
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(items[idx]), labels[idx]).backward()
                optimizer.step()

    def matching_loss(self, net, generator):
        net.train()
        params = [p for p in net.parameters() if p.requires_grad]
        total = None
        for c in range(self.context.real.num_classes):
            real = real_frames(self.context, c, self.config.batch_real, generator)
            target = torch.full((len(real),), c, device=real.device)
            g_real = torch.autograd.grad(F.cross_entropy(net(real), target), params)
            g_real = [g.detach() for g in g_real]
            syn = self.synthetic.of_class(c)
            syn_loss = F.cross_entropy(net(syn), torch.full((len(syn),), c, device=syn.device))
            g_syn = torch.autograd.grad(syn_loss, params, create_graph=True)
            distance = gradient_distance(list(g_syn), g_real)
            total = distance if total is None else total + distance
        return total


@register_method("dm", STATIC_METHODS)
class StaticDM(_StaticLearning):
    def matching_loss(self, net, generator):
        net.eval().requires_grad_(False)
        embedded = net.embed(self.synthetic.items)
        total = embedded.new_zeros(())
        per_class = self.synthetic.per_class
        for c in range(self.context.real.num_classes):
            with torch.no_grad():
                real = net.embed(real_frames(self.context, c, self.config.batch_real, generator))
            syn = embedded[c * per_class : (c + 1) * per_class]
            total = total + (real.mean(0) - syn.mean(0)).square().sum()
        return total
