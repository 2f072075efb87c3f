"""The evaluation protocol (SPEC §5): train fresh networks on a set, test on the real test clips.

SGD momentum 0.9, weight decay 5e-4, cross-entropy, batch 256, ``epochs`` (500) with the lr cut
x0.1 at the half, where the optimiser is re-created as the reference did (momentum reset). The
reference's per-batch standardisation applies to training and test batches alike (an option,
on by default). R repeats with fresh networks; the **final epoch's** accuracy is reported as
mean ± std (the reference picked the best epoch on the test set, which inflates). Top-1, top-5
and per-class accuracy are kept, so static/dynamic group accuracies follow.

The set is materialised once and kept on the device; an epoch only indexes it.

Repeats run one after another (``sequential``) or as one stacked model under ``torch.func.vmap``
(``vmap``): every repeat gets its own init, order and dropout either way. ``auto`` picks
sequential, except for IEEE fp32 on CUDA (``resolve_repeat_mode``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from s2d_ray.config import StrictConfig
from s2d_ray.data.stream import ArrowClipDataset, ClipTransform, standardize
from s2d_ray.models import Precision, create
from s2d_ray.models.step import MicroBatch, predict, train_step
from s2d_ray.seeding import derive_seed, torch_generator
from s2d_ray.synthetic.base import supervised_loss


class EvalConfig(StrictConfig):
    arch: str = "convnet3d"
    epochs: int = Field(default=500, ge=1)
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    batch_size: int = Field(default=256, ge=1)
    eval_batch_size: int = Field(default=256, ge=1)
    repeats: int = Field(default=3, ge=1)
    standardize: bool = Field(default=True, description="the reference's per-batch standard.")
    normalize: Literal["imagenet", "none"] = "imagenet"
    repeat_mode: Literal["auto", "sequential", "vmap"] = "auto"
    precision: Precision = "tf32"
    micro_batch: MicroBatch = Field(
        default="auto", description="clips per forward/backward (models/step.py); None: all"
    )
    seed: int = 0


def with_own_settings(config: EvalConfig, own: dict) -> EvalConfig:
    """``config`` with a set's own evaluation settings (MTT: its learned lr; FRePo: lr 1e-4
    and 1000 epochs, SPEC §6) wherever the user left the protocol's default."""
    unset = {k: v for k, v in own.items() if k not in config.model_fields_set}
    return config.model_copy(update=unset)


# SPEC §5: cross-architecture evaluation trains 100 epochs at lr 1e-2.
CROSS_ARCH_DEFAULTS = {"convnet_gru": {"epochs": 100}, "convnet_lstm": {"epochs": 100}}


@dataclass
class EvalResult:
    """Per repeat: final-epoch top-1 / top-5 and per-class top-1 on the real test clips."""

    top1: list[float]
    top5: list[float]
    per_class: list[list[float]]
    train_items: int
    config: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(self.top1))

    @property
    def std(self) -> float:
        return float(np.std(self.top1))

    @property
    def top5_mean(self) -> float:
        return float(np.mean(self.top5))

    def group_accuracy(self, classes: list[int]) -> tuple[float, float]:
        """Mean ± std over repeats of the mean per-class accuracy over ``classes``."""
        per_repeat = [float(np.mean([pc[c] for c in classes])) for pc in self.per_class]
        return float(np.mean(per_repeat)), float(np.std(per_repeat))

    def to_dict(self) -> dict:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "per_class": self.per_class,
            "train_items": self.train_items,
            "mean": self.mean,
            "std": self.std,
            "top5_mean": self.top5_mean,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, d: dict) -> EvalResult:
        return cls(d["top1"], d["top5"], d["per_class"], d["train_items"], d.get("config", {}))


def resolve_repeat_mode(config: EvalConfig, device: torch.device) -> str:
    """``auto``: vmap only for IEEE fp32 on CUDA, the one case where it measured faster.
    vmap runs the repeats' convolutions as grouped ones: on a CPU these are slower
    (bench/evaluate.py); on an H100 (bench/gpu_loops.py, 5 repeats, 16x112²) stacking took
    0.74-0.79x the time of one repeat after another in IEEE fp32, but 2.7-3.1x in TF32 and
    9-12x in bf16, whose grouped kernels get no tensor cores, and sequential TF32 is 2.5x
    faster than stacked fp32 anyway."""
    if config.repeat_mode != "auto":
        return config.repeat_mode
    return "vmap" if device.type == "cuda" and config.precision == "fp32" else "sequential"


def evaluate_set(
    items: torch.Tensor,
    labels: torch.Tensor,
    test: ArrowClipDataset,
    config: EvalConfig,
    *,
    device: torch.device | str = "cpu",
    **arch_kwargs,
) -> EvalResult:
    """Train ``config.repeats`` fresh ``config.arch`` networks on (items, labels) and test them.

    ``items``: float videos (N, T, 3, H, W) in the normalised space of ``config.normalize``.
    """
    device = torch.device(device)
    items, labels = items.detach().to(device).float(), labels.detach().to(device)
    num_classes = test.num_classes
    clip_shape = tuple(items.shape[1:])
    models = [
        create(
            config.arch,
            num_classes=num_classes,
            clip_shape=clip_shape,
            seed=derive_seed(config.seed, "eval-init", r),
            **arch_kwargs,
        ).to(device)
        for r in range(config.repeats)
    ]
    if resolve_repeat_mode(config, device) == "vmap" and config.repeats > 1:
        models = train_stacked(models, items, labels, config, device)
    else:
        batches = tensor_batches(items, labels, config)
        for r, model in enumerate(models):
            train_network(model, batches, config, derive_seed(config.seed, "eval", r), device)
    scores = [test_network(m, test, config, device) for m in models]
    return _result(scores, len(labels), config)


def _result(scores: list[tuple], train_items: int, config: EvalConfig) -> EvalResult:
    return EvalResult(
        top1=[s[0] for s in scores],
        top5=[s[1] for s in scores],
        per_class=[s[2] for s in scores],
        train_items=train_items,
        config=config.model_dump(mode="json"),
    )


def _optimizer(params, config: EvalConfig, epoch: int) -> torch.optim.Optimizer:
    lr = config.lr * (0.1 if epoch >= config.epochs // 2 else 1.0)
    return torch.optim.SGD(
        params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


Batches = Callable[[int, torch.Generator], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def tensor_batches(items: torch.Tensor, labels: torch.Tensor, config: EvalConfig) -> Batches:
    """Shuffled minibatches of an in-memory set (a synthetic set, materialised once)."""

    def batches(epoch: int, order: torch.Generator):
        perm = torch.randperm(len(labels), generator=order).to(items.device)
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start : start + config.batch_size]
            yield items[idx], labels[idx]

    return batches


def real_batches(
    train: ArrowClipDataset, config: EvalConfig, device: torch.device, flip: bool
) -> Batches:
    """Minibatches of real clips: one jittered clip per video per epoch, flipped where the
    dataset flips, converted on the device (SPEC §1's augmentation for training on real data)."""
    transform = ClipTransform(normalize=config.normalize, standardize=False, flip=flip)

    def batches(epoch: int, order: torch.Generator):
        rows = train.epoch_rows(derive_seed(config.seed, "real-clips"), epoch)
        rows = rows[torch.randperm(len(rows), generator=order)]
        for start in range(0, len(rows), config.batch_size):
            frames, labels = train.batch(rows[start : start + config.batch_size])
            yield transform(frames, device=device, generator=order), labels.to(device)

    return batches


def train_network(
    model: nn.Module,
    batches: Batches,
    config: EvalConfig,
    seed: int,
    device: torch.device,
) -> float:
    """The protocol's training loop for one network; returns the last epoch's mean loss."""
    model.train()
    order = torch_generator(seed, "order")
    loss_sum, seen = math.nan, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "dropout"))
        optimizer = _optimizer(model.parameters(), config, 0)
        for epoch in range(config.epochs):
            if epoch == config.epochs // 2 and epoch:  # lr x0.1, momentum reset (reference)
                optimizer = _optimizer(model.parameters(), config, epoch)
            loss_sum, seen = 0.0, 0
            for x, y in batches(epoch, order):
                x = standardize(x) if config.standardize else x
                loss = train_step(
                    model,
                    optimizer,
                    x,
                    y,
                    supervised_loss,
                    precision=config.precision,
                    micro_batch=config.micro_batch,
                )
                loss_sum, seen = loss_sum + float(loss) * len(y), seen + len(y)
    return loss_sum / max(seen, 1)


def evaluate_real(
    train: ArrowClipDataset,
    test: ArrowClipDataset,
    config: EvalConfig,
    *,
    flip: bool = False,
    device: torch.device | str = "cpu",
) -> EvalResult:
    """The protocol trained on all real training clips: the upper-bound row."""
    device = torch.device(device)
    t, h, w, c = train.clip_shape
    scores = []
    for r in range(config.repeats):
        model = create(
            config.arch,
            num_classes=test.num_classes,
            clip_shape=(t, c, h, w),
            seed=derive_seed(config.seed, "eval-init", r),
        ).to(device)
        batches = real_batches(train, config, device, flip)
        train_network(model, batches, config, derive_seed(config.seed, "eval", r), device)
        scores.append(test_network(model, test, config, device))
    return _result(scores, train.num_videos, config)


def train_stacked(
    models: list[nn.Module],
    items: torch.Tensor,
    labels: torch.Tensor,
    config: EvalConfig,
    device: torch.device,
) -> list[nn.Module]:
    """All repeats as one stacked model under vmap; each keeps its own order and dropout.

    SGD with momentum and weight decay acts elementwise, so one optimiser over the stacked
    parameters is R independent optimisers; the loss sums the repeats' mean losses so each
    repeat's gradient is its own.
    """
    from torch.func import functional_call, stack_module_state, vmap

    repeats = len(models)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def call(p, b, x):
        return functional_call(base, (p, b), (x,))

    forward = vmap(call, randomness="different")

    def stacked_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return supervised_loss(logits.flatten(0, 1), y.flatten(0, 1)) * repeats

    orders = [torch_generator(derive_seed(config.seed, "eval", r), "order") for r in range(repeats)]
    for m in models:
        m.train()
    base.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(config.seed, "eval-stacked-dropout"))
        optimizer = _optimizer(params.values(), config, 0)
        for epoch in range(config.epochs):
            if epoch == config.epochs // 2 and epoch:
                optimizer = _optimizer(params.values(), config, epoch)
            perms = torch.stack([torch.randperm(len(labels), generator=g) for g in orders])
            perms = perms.to(device)
            for start in range(0, perms.shape[1], config.batch_size):
                idx = perms[:, start : start + config.batch_size]  # (R, B)
                x = items[idx]
                if config.standardize:
                    flat = x.flatten(1)
                    mean = flat.mean(1).view(-1, *[1] * (x.dim() - 1))
                    std = flat.std(1).clamp_min(1e-6).view(-1, *[1] * (x.dim() - 1))
                    x = (x - mean) / std
                train_step(
                    lambda part: forward(params, buffers, part),
                    optimizer,
                    x,
                    labels[idx],
                    stacked_loss,
                    precision=config.precision,
                    micro_batch=config.micro_batch,
                    batch_dim=1,  # (R, B, ...): parts split the batch, never the repeats
                )
    with torch.no_grad():
        for r, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][r])
    return models


@torch.no_grad()
def test_network(
    model: nn.Module, test: ArrowClipDataset, config: EvalConfig, device: torch.device
) -> tuple[float, float, list[float]]:
    """(top-1, top-5, per-class top-1) over every test clip."""
    model.eval()
    transform = ClipTransform(normalize=config.normalize, standardize=config.standardize)
    k = min(5, test.num_classes)
    correct1 = torch.zeros(test.num_classes, dtype=torch.float64, device=device)
    count = torch.zeros(test.num_classes, dtype=torch.float64, device=device)
    correct5 = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(test), config.eval_batch_size):
        rows = range(start, min(len(test), start + config.eval_batch_size))
        frames, y = test.batch(rows, pin_memory=device.type == "cuda")
        y = y.to(device, non_blocking=True)
        x = transform(frames, device=device)
        logits = predict(model, x, precision=config.precision, micro_batch=config.micro_batch)
        top = logits.topk(k, dim=1).indices
        hit1 = (top[:, 0] == y).double()
        correct1.index_add_(0, y, hit1)
        count.index_add_(0, y, torch.ones_like(hit1))
        correct5 += (top == y[:, None]).any(1).sum()
    # read once at the end: a read per batch would stop the GPU while the next is gathered
    correct1, count = correct1.cpu(), count.cpu()
    per_class = (correct1 / count.clamp_min(1)).tolist()
    return float(correct1.sum() / count.sum()), float(correct5) / float(count.sum()), per_class
