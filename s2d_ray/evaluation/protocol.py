"""The evaluation protocol (SPEC §5): train fresh networks on a set, test on the real test clips.

SGD momentum 0.9, weight decay 5e-4, cross-entropy, batch 256, ``epochs`` (500) with the lr cut
x0.1 at the half, where the optimiser is re-created as the reference did (momentum reset). The
reference's per-batch standardisation applies to training and test batches alike (an option,
on by default). R repeats with fresh networks; the **final epoch's** accuracy is reported as
mean ± std (the reference picked the best epoch on the test set, which inflates). Top-1, top-5
and per-class accuracy are kept, so static/dynamic group accuracies follow.

An option the reference has not, off by default: ``max_grad_norm`` (``--eval-max-grad-norm``)
caps the gradient's L2 norm before each update. On a set of ~10 clips (one full-batch step
an epoch) SGD at lr 0.01 with momentum 0.9 trains this normalisation-free network at the
edge of stability: loss spikes come and go until one spike's update grows the weights, the
next gradient grows with their product and the updates run away. 11 dark ARID clips:
gradient norm 5-15 while training, 96 and 161 in spikes that recovered, then 367, 784, 8.1e3,
9.5e5, 4e10, 3e17 and NaN at epoch 74; the same in float64, without dropout, and on 10
basketball5 clips, none on 50. A cap of 20 keeps them finite. It is no default because it
is not free on healthy sets: under it a step is the reference's to the bit, but on the
embedded set's random real clips at ipc 1 (3 networks x 60 epochs, val) the gradient reached
37-40 and a cap of 20 acted on 5.6 % of the steps, moving the networks by 0, -7.5 and +3.3
points (48.3 ± 3.0 -> 46.9 ± 7.6; ``bench/eval_grad_cap.py``). A network that does run away
raises a ``DivergedEvaluationWarning`` that names both ways out.

The set is materialised once and kept on the device; an epoch only indexes it.

Repeats run one after another (``sequential``) or as one stacked model under ``torch.func.vmap``
(``vmap``): every repeat gets its own init, order and dropout either way. ``auto`` picks
sequential, except for IEEE fp32 on CUDA (``resolve_repeat_mode``).

FRePo's sets are trained as FRePo's evaluation does (SPEC §5; the set's own settings,
``methods.frepo.FREPO_PROTOCOL``): AdamW, a linear warm-up from 0.01x over the first 10 %
of epochs chained with cosine annealing to 0.01x lr, MSE on label vectors (learnt ones, or
one-hot), 1000 epochs.

Networks are scored on the split they are given (``test`` for a final table, ``val`` for
every choice); ``also`` scores the same networks on further splits, e.g. a final table's
val column beside its test one.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from s2d_ray.config import StrictConfig
from s2d_ray.data.clips import ClipDataset
from s2d_ray.data.stream import ClipTransform, standardize
from s2d_ray.evaluation.items import EpochDraw, Pairs, epoch_draw
from s2d_ray.models import Precision, create
from s2d_ray.models.step import MicroBatch, predict, train_step
from s2d_ray.progress import Progress
from s2d_ray.seeding import derive_seed, torch_generator
from s2d_ray.synthetic.base import SyntheticSet, supervised_loss


class EvalConfig(StrictConfig):
    """SPEC §5's protocol. ``eval_batch_size`` 64 is the reference's test batch: with the
    per-batch standardisation on, a test clip's input depends on the clips batched with it
    (the test split is read in its stored, class-major order), so the batch's size and
    make-up are part of the result."""

    arch: str = "convnet3d"
    epochs: int = Field(default=500, ge=1)
    lr: float = Field(default=0.01, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    schedule: Literal["step", "warmup_cosine"] = Field(
        default="step", description="step: x0.1 at the half; warmup_cosine: FRePo's"
    )
    loss: Literal["ce", "mse"] = Field(
        default="ce", description="mse: on label vectors (learnt, or one-hot), FRePo's"
    )
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    batch_size: int = Field(default=256, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)
    repeats: int = Field(default=3, ge=1)
    standardize: bool = Field(default=True, description="the reference's per-batch standard.")
    normalize: Literal["imagenet", "none"] = "imagenet"
    repeat_mode: Literal["auto", "sequential", "vmap"] = "auto"
    pairs: Pairs = Field(
        default="redraw", description="S2D memories: one pair per slot re-drawn each epoch, or all"
    )
    max_grad_norm: float | None = Field(
        default=None,
        gt=0,
        description="cap on the gradient's L2 norm before each update (20 stops small sets' "
        "runaway); None: unbounded, the reference's",
    )
    precision: Precision = "tf32"
    micro_batch: MicroBatch = Field(
        default="auto", description="clips per forward/backward (models/step.py); None: all"
    )
    seed: int = 0


# SPEC §5: cross-architecture evaluation trains 100 epochs at lr 1e-2, for every set
# whatever its own lr and epochs (its optimiser and loss stay its own).
CROSS_ARCH_DEFAULTS = {
    "convnet_gru": {"epochs": 100, "lr": 1e-2},
    "convnet_lstm": {"epochs": 100, "lr": 1e-2},
}


def with_own_settings(config: EvalConfig, own: dict) -> EvalConfig:
    """``config`` with a set's own evaluation settings (MTT: its learned lr, or lr_teacher
    when syn_lr was frozen; FRePo: ``FREPO_PROTOCOL``) wherever the user left the protocol's
    default. A cross-architecture network keeps its own lr and epochs (CROSS_ARCH_DEFAULTS)
    unless the user set them."""
    unset = {k: v for k, v in own.items() if k not in config.model_fields_set}
    arch = {
        k: v
        for k, v in CROSS_ARCH_DEFAULTS.get(config.arch, {}).items()
        if k not in config.model_fields_set
    }
    return config.model_copy(update=unset | arch)


@dataclass
class EvalResult:
    """Per repeat: final-epoch top-1 / top-5 and per-class top-1 on the real clips of
    ``split``; ``also``: the same networks' top-1 on other splits (e.g. val beside test)."""

    top1: list[float]
    top5: list[float]
    per_class: list[list[float]]
    train_items: int
    config: dict = field(default_factory=dict)
    split: str = "test"
    also: dict[str, list[float]] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(self.top1))

    @property
    def std(self) -> float:
        return float(np.std(self.top1))

    @property
    def top5_mean(self) -> float:
        return float(np.mean(self.top5))

    def also_mean(self, split: str) -> float:
        """Mean top-1 of the same networks on ``split`` (NaN where it was not scored)."""
        return float(np.mean(self.also[split])) if split in self.also else math.nan

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
            "split": self.split,
            "also": self.also,
        }

    @classmethod
    def from_dict(cls, d: dict) -> EvalResult:
        return cls(
            d["top1"],
            d["top5"],
            d["per_class"],
            d["train_items"],
            d.get("config", {}),
            d.get("split", "test"),
            d.get("also", {}),
        )


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
    test: ClipDataset,
    config: EvalConfig,
    *,
    device: torch.device | str = "cpu",
    also: Sequence[ClipDataset] = (),
    **arch_kwargs,
) -> EvalResult:
    """Train ``config.repeats`` fresh ``config.arch`` networks on (items, labels) and score
    them on ``test`` (whatever split it holds) and on each split of ``also``.

    ``items``: float videos (N, T, 3, H, W) in the normalised space of ``config.normalize``.
    """
    device = torch.device(device)
    items, labels = items.detach().to(device).float(), labels.detach().to(device)
    return evaluate_draw(
        lambda epoch: (items, labels), len(labels), test, config, device, also, **arch_kwargs
    )


def evaluate_synthetic(
    synthetic: SyntheticSet,
    test: ClipDataset,
    config: EvalConfig,
    *,
    device: torch.device | str = "cpu",
    also: Sequence[ClipDataset] = (),
) -> EvalResult:
    """The protocol on a synthetic set as ``items.epoch_draw`` feeds it (stills repeated over
    the real clips' frames; an S2D memory's pairs per ``config.pairs``)."""
    frames = test.clip_shape[0]
    draw, count = epoch_draw(
        synthetic, frames, pairs=config.pairs, seed=derive_seed(config.seed, "pairs"), device=device
    )
    return evaluate_draw(draw, count, test, config, device, also)


def evaluate_draw(
    draw: EpochDraw,
    count: int,
    test: ClipDataset,
    config: EvalConfig,
    device: torch.device | str = "cpu",
    also: Sequence[ClipDataset] = (),
    **arch_kwargs,
) -> EvalResult:
    """``evaluate_set`` for a set whose items may change each epoch (``items.epoch_draw``:
    an S2D memory's pairs re-drawn per epoch); ``count`` items per epoch."""
    device = torch.device(device)
    first, _ = draw(0)
    clip_shape = tuple(first.shape[1:])
    models = [
        create(
            config.arch,
            num_classes=test.num_classes,
            clip_shape=clip_shape,
            seed=derive_seed(config.seed, "eval-init", r),
            **arch_kwargs,
        ).to(device)
        for r in range(config.repeats)
    ]
    with evaluation_progress(config) as bar:
        if resolve_repeat_mode(config, device) == "vmap" and config.repeats > 1:
            models = train_stacked(models, draw, config, device, bar)
        else:
            batches = draw_batches(draw, config)
            for r, model in enumerate(models):
                seed = derive_seed(config.seed, "eval", r)
                train_network(model, batches, config, seed, device, bar)
    return score(models, test, config, device, also, count)


class DivergedEvaluationWarning(RuntimeWarning):
    """An evaluation network's loss became NaN or infinite: the score it gives is chance."""


def evaluation_progress(config: EvalConfig) -> Progress:
    return Progress(
        config.epochs * config.repeats,
        f"evaluation, {config.repeats} x {config.arch}",
        unit="epoch",
    )


def score(
    models: list[nn.Module],
    test: ClipDataset,
    config: EvalConfig,
    device: torch.device,
    also: Sequence[ClipDataset],
    train_items: int,
) -> EvalResult:
    """Trained networks scored on ``test`` and on each split of ``also``."""
    scores = test_networks(models, test, config, device)
    extra = {
        other.split: [s[0] for s in test_networks(models, other, config, device)] for other in also
    }
    return EvalResult(
        top1=[s[0] for s in scores],
        top5=[s[1] for s in scores],
        per_class=[s[2] for s in scores],
        train_items=train_items,
        config=config.model_dump(mode="json"),
        split=test.split,
        also=extra,
    )


class EpochSchedule:
    """The protocol's optimiser and learning rate, epoch by epoch.

    ``step``: SGD (momentum, weight decay) at lr, then lr x0.1 from the half on, where the
    optimiser is re-created as the reference did (momentum reset). ``warmup_cosine``
    (FRePo's evaluation): torch's LinearLR from 0.01x over the first 10 % of the epochs
    chained with CosineAnnealingLR to 0.01x lr over all of them, stepped once per epoch.
    """

    def __init__(self, params: Iterable[torch.Tensor], config: EvalConfig) -> None:
        self.params, self.config = list(params), config
        self.optimizer = self._make(config.lr)
        self.scheduler = None
        if config.schedule == "warmup_cosine":
            lr_sched = torch.optim.lr_scheduler
            warmup = lr_sched.LinearLR(
                self.optimizer, start_factor=0.01, total_iters=max(1, int(0.1 * config.epochs))
            )
            cosine = lr_sched.CosineAnnealingLR(
                self.optimizer, T_max=config.epochs, eta_min=0.01 * config.lr
            )
            self.scheduler = lr_sched.ChainedScheduler([warmup, cosine])

    def _make(self, lr: float) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "adamw":
            return torch.optim.AdamW(self.params, lr=lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(self.params, lr=lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def start_epoch(self, epoch: int) -> torch.optim.Optimizer:
        """The optimiser to train epoch ``epoch`` with (call it for 0, 1, 2, ... in turn)."""
        if self.scheduler is not None:
            if epoch:
                self.scheduler.step()
        elif epoch == self.config.epochs // 2 and epoch:
            self.optimizer = self._make(0.1 * self.config.lr)
        return self.optimizer

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def protocol_loss(config: EvalConfig, num_classes: int):
    """The training loss: cross-entropy (or, on learnt label vectors, their regression), or
    FRePo's MSE (mean over elements, as torch's MSELoss) on label vectors."""
    if config.loss == "ce":
        return supervised_loss

    def mse(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not targets.is_floating_point():
            targets = F.one_hot(targets, num_classes).to(logits.dtype)
        return F.mse_loss(logits, targets)

    return mse


Batches = Callable[[int, torch.Generator], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def draw_batches(draw: EpochDraw, config: EvalConfig) -> Batches:
    """Shuffled minibatches of an in-memory set: the epoch's draw of a synthetic set."""

    def batches(epoch: int, order: torch.Generator):
        items, labels = draw(epoch)
        perm = torch.randperm(len(labels), generator=order).to(items.device)
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start : start + config.batch_size]
            yield items[idx], labels[idx]

    return batches


def real_batches(
    train: ClipDataset, config: EvalConfig, device: torch.device, flip: bool
) -> Batches:
    """Minibatches of real clips: one jittered clip per video per epoch, flipped where the
    dataset flips, converted on the device (SPEC §1's augmentation for training on real data)."""
    transform = ClipTransform(normalize=config.normalize, standardize=False, flip=flip)

    def batches(epoch: int, order: torch.Generator):
        rows = train.epoch_rows(derive_seed(config.seed, "real-clips"), epoch)
        rows = rows[torch.randperm(len(rows), generator=order)]
        for frames, labels in train.batches(rows.split(config.batch_size)):
            yield transform(frames, device=device, generator=order), labels.to(device)

    return batches


def train_network(
    model: nn.Module,
    batches: Batches,
    config: EvalConfig,
    seed: int,
    device: torch.device,
    progress: Progress | None = None,
) -> float:
    """The protocol's training loop for one network; returns the last epoch's mean loss."""
    model.train()
    order = torch_generator(seed, "order")
    loss_sum, seen = math.nan, 0
    loss_fn = protocol_loss(config, _num_outputs(model))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "dropout"))
        schedule = EpochSchedule(model.parameters(), config)
        for epoch in range(config.epochs):
            optimizer = schedule.start_epoch(epoch)
            loss_sum, seen = 0.0, 0
            for x, y in batches(epoch, order):
                x = standardize(x) if config.standardize else x
                loss = train_step(
                    model,
                    optimizer,
                    x,
                    y,
                    loss_fn,
                    precision=config.precision,
                    micro_batch=config.micro_batch,
                    max_grad_norm=config.max_grad_norm,
                )
                loss_sum, seen = loss_sum + float(loss) * len(y), seen + len(y)
            if progress is not None:
                progress.update(train_loss=loss_sum / max(seen, 1))
    last = loss_sum / max(seen, 1)
    if not math.isfinite(last):
        # its score is chance, not the set's worth: say so (e.g. a few dark clips at lr 0.01)
        warnings.warn(
            f"an evaluation network's training loss is {last} after {config.epochs} epochs at "
            f"lr {config.lr}: its accuracy is chance, not the set's worth; a lower "
            "--eval-lr or --eval-max-grad-norm 20 may train it",
            DivergedEvaluationWarning,
            stacklevel=2,
        )
    return last


def _num_outputs(model: nn.Module) -> int:
    """Classes a network predicts (its last parameter is its head's bias)."""
    return int(list(model.parameters())[-1].shape[0])


def evaluate_real(
    train: ClipDataset,
    test: ClipDataset,
    config: EvalConfig,
    *,
    flip: bool = False,
    device: torch.device | str = "cpu",
    also: Sequence[ClipDataset] = (),
) -> EvalResult:
    """The protocol trained on all real training clips: the upper-bound row."""
    device = torch.device(device)
    t, h, w, c = train.clip_shape
    models = []
    bar = evaluation_progress(config)
    for r in range(config.repeats):
        model = create(
            config.arch,
            num_classes=test.num_classes,
            clip_shape=(t, c, h, w),
            seed=derive_seed(config.seed, "eval-init", r),
        ).to(device)
        batches = real_batches(train, config, device, flip)
        train_network(model, batches, config, derive_seed(config.seed, "eval", r), device, bar)
        models.append(model)
    bar.close()
    return score(models, test, config, device, also, train.num_videos)


def train_stacked(
    models: list[nn.Module],
    draw: EpochDraw,
    config: EvalConfig,
    device: torch.device,
    progress: Progress | None = None,
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

    loss_fn = protocol_loss(config, _num_outputs(models[0]))

    def stacked_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(logits.flatten(0, 1), y.flatten(0, 1)) * repeats

    orders = [torch_generator(derive_seed(config.seed, "eval", r), "order") for r in range(repeats)]
    for m in models:
        m.train()
    base.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(config.seed, "eval-stacked-dropout"))
        schedule = EpochSchedule(params.values(), config)
        for epoch in range(config.epochs):
            optimizer = schedule.start_epoch(epoch)
            items, labels = draw(epoch)
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
                    max_grad_norm=config.max_grad_norm,  # each repeat's own norm
                )
            if progress is not None:
                progress.update(repeats)
    with torch.no_grad():
        for r, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][r])
    return models


def test_network(
    model: nn.Module, test: ClipDataset, config: EvalConfig, device: torch.device
) -> tuple[float, float, list[float]]:
    """(top-1, top-5, per-class top-1) of one network over every clip of ``test``."""
    return test_networks([model], test, config, device)[0]


@torch.no_grad()
def test_networks(
    models: Sequence[nn.Module], test: ClipDataset, config: EvalConfig, device: torch.device
) -> list[tuple[float, float, list[float]]]:
    """(top-1, top-5, per-class top-1) of each network over every clip of ``test`` (any
    split): one streamed pass in stored order, batches of ``eval_batch_size``, each batch
    scored by every network, so the split is read once whatever the number of repeats."""
    transform = ClipTransform(normalize=config.normalize, standardize=config.standardize)
    k = min(5, test.num_classes)
    shape = (len(models), test.num_classes)
    correct1 = torch.zeros(shape, dtype=torch.float64, device=device)
    count = torch.zeros(test.num_classes, dtype=torch.float64, device=device)
    correct5 = torch.zeros(len(models), dtype=torch.float64, device=device)
    for model in models:
        model.eval()
    plan = torch.arange(len(test)).split(config.eval_batch_size)
    for frames, y in test.batches(plan, pin_memory=device.type == "cuda"):
        y = y.to(device, non_blocking=True)
        x = transform(frames, device=device)
        count.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        for m, model in enumerate(models):
            logits = predict(model, x, precision=config.precision, micro_batch=config.micro_batch)
            top = logits.topk(k, dim=1).indices
            correct1[m].index_add_(0, y, (top[:, 0] == y).double())
            correct5[m] += (top == y[:, None]).any(1).sum()
    # read once at the end: a read per batch would stop the GPU while the next is gathered
    correct1, count, correct5 = correct1.cpu(), count.cpu(), correct5.cpu()
    total = float(count.sum())
    return [
        (
            float(correct1[m].sum()) / total,
            float(correct5[m]) / total,
            (correct1[m] / count.clamp_min(1)).tolist(),
        )
        for m in range(len(models))
    ]
