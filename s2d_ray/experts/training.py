"""Training one expert: the trajectory MTT matches (SPEC §4).

SGD with ``lr_teacher`` (no momentum, no weight decay), batch 256, cross-entropy. On CUDA in
TF32 by default, as the reference's PyTorch ran its convolutions: on an H100 at 16x112² a
256-clip gradient came within 1 % of IEEE fp32's, 4x faster (bench/gpu_loops.py). bf16 was
another 1.7x faster but moved that gradient by 5 %, and MTT matches one-epoch displacements:
an option, not the default.

The flat parameters are snapshotted at init and after every epoch into the trajectory store.
By default only ``max_start_epoch - 1 + expert_epochs`` epochs are trained: MTT draws
t0 < max_start_epoch and reads snapshot t0 + expert_epochs, so it never reads a later one.

An epoch is one pass over the *videos*: each video contributes one of its stored train clips,
drawn per epoch (the reference's temporal jitter), mirrored per clip where the dataset flips.
Every draw (clip choice, order, flips, dropout) comes from (seed, expert, epoch), so an expert
resumed from its last snapshot ends bit-identical on CPU to one trained without interruption.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from s2d_ray.config import StrictConfig
from s2d_ray.data.clips import ClipDataset
from s2d_ray.data.registry import get_dataset
from s2d_ray.data.stream import ClipShards, ClipTransform
from s2d_ray.experts.store import ExpertInfo, TrajectoryStore
from s2d_ray.models import Precision, create, flatten_params
from s2d_ray.models.step import MicroBatch, predict, train_step
from s2d_ray.seeding import derive_seed, torch_generator

log = logging.getLogger(__name__)

SEED_RULE = (
    "expert i: s_i = derive_seed(seed, 'expert', i) (also its init); epoch e: clip per video "
    "from derive_seed(s_i, 'clip', e, video), order and flips from "
    "torch_generator(s_i, 'epoch', e), dropout from derive_seed(s_i, 'dropout', e)"
)


class ExpertConfig(StrictConfig):
    """How every expert of a farm is trained; the paper's values are the defaults."""

    network: str = "convnet3d"
    lr_teacher: float = Field(default=0.01, gt=0)
    batch_size: int = Field(default=256, ge=1)
    eval_batch_size: int = Field(default=256, ge=1)
    max_start_epoch: int = Field(default=10, ge=1)
    expert_epochs: int = Field(default=1, ge=1)
    epochs: int | None = Field(
        default=None, ge=1, description="default: max_start_epoch - 1 + expert_epochs"
    )
    flip: bool | None = Field(default=None, description="None: the dataset's default")
    normalize: Literal["imagenet", "none"] = "imagenet"
    standardize: bool = Field(default=True, description="the reference's per-batch standard.")
    precision: Precision = Field(
        default="tf32", description="CUDA only: fp32 (IEEE), tf32 or bf16 (models/precision.py)"
    )
    micro_batch: MicroBatch = Field(
        default="auto", description="clips per forward/backward (models/step.py); None: all"
    )
    seed: int = 0

    @property
    def num_epochs(self) -> int:
        return self.epochs or self.max_start_epoch - 1 + self.expert_epochs

    def for_data(self, shards: ClipShards) -> ExpertConfig:
        """This config with ``flip`` resolved from the dataset's registry entry."""
        if self.flip is not None:
            return self
        return self.model_copy(update={"flip": get_dataset(shards.manifest["dataset"]).flip})

    def transform(self) -> ClipTransform:
        if self.flip is None:
            raise ValueError("flip is unresolved: call ExpertConfig.for_data(shards) first")
        return ClipTransform(normalize=self.normalize, standardize=self.standardize, flip=self.flip)

    def expert_seed(self, expert_id: int) -> int:
        return derive_seed(self.seed, "expert", expert_id)


def trajectory_settings(config: ExpertConfig, shards: ClipShards) -> dict:
    """Everything that shapes a trajectory, readably: a trajectory store's identity.

    Not included: how many epochs are trained (max_start_epoch, expert_epochs, epochs) and
    the evaluation batch size, which change what is stored but not the trajectory itself.
    Clip shapes are (T, H, W, 3) on disk and (T, 3, H, W) for networks.
    """
    config = config.for_data(shards)
    t, h, w, c = shards.clip_shape
    settings = {
        "network": config.network,
        "num_classes": shards.num_classes,
        "clip_shape": [t, c, h, w],
        "normalize": config.normalize,
        "standardize": config.standardize,
        "flip": config.flip,
        "clips_per_video": shards.train_clips_per_video,
        "optimizer": "sgd, no momentum, no weight decay, cross-entropy",
        "lr_teacher": config.lr_teacher,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "seed_rule": SEED_RULE,
    }
    # dropout draws its masks part by part; None (whole batches) adds no key, so that stores
    # made before micro-batching existed keep their identity
    if config.micro_batch is not None:
        settings["micro_batch"] = config.micro_batch
    return settings


def build_network(settings: dict, seed: int, device: torch.device) -> nn.Module:
    """The experts' network as a store's ``settings`` describe it, seeded."""
    model = create(
        settings["network"],
        num_classes=settings["num_classes"],
        clip_shape=tuple(settings["clip_shape"]),
        seed=seed,
    )
    return model.to(device)


def used_precision(requested: Precision, device: torch.device) -> Precision:
    """TF32 and bf16 exist for CUDA here only; elsewhere training runs in IEEE fp32."""
    if requested != "fp32" and device.type != "cuda":
        log.debug("precision %s applies on CUDA only; training in fp32 on %s", requested, device)
        return "fp32"
    return requested


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ClipDataset, config: ExpertConfig, device: torch.device
) -> dict[str, float]:
    """Top-1 accuracy and mean loss over every clip of ``data`` (deterministic test clips)."""
    model.eval()
    transform = ClipTransform(normalize=config.normalize, standardize=config.standardize)
    correct, loss_sum = torch.zeros((), device=device), torch.zeros((), device=device)
    plan = torch.arange(len(data)).split(config.eval_batch_size)
    for frames, labels in data.batches(plan, pin_memory=device.type == "cuda"):
        labels = labels.to(device, non_blocking=True)
        x = transform(frames, device=device)
        logits = predict(model, x, precision=config.precision, micro_batch=config.micro_batch)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    # read once at the end: a read per batch would stop the GPU while the next is gathered
    return {"test_acc": float(correct) / len(data), "test_loss": float(loss_sum) / len(data)}


def train_epoch(
    model: nn.Module,
    data: ClipDataset,
    config: ExpertConfig,
    clip_seed: int,
    epoch: int,
    generator: torch.Generator,
    device: torch.device,
) -> float:
    """One pass of plain SGD over the videos, one jittered clip each, shuffled; returns the
    mean training loss."""
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr_teacher, momentum=0.0, weight_decay=0.0
    )
    transform = config.transform()
    rows = data.epoch_rows(clip_seed, epoch)
    order = rows[torch.randperm(len(rows), generator=generator)]
    loss_sum = torch.zeros((), device=device)
    plan = order.split(config.batch_size)
    for frames, labels in data.batches(plan, pin_memory=device.type == "cuda"):
        x = transform(frames, device=device, generator=generator)
        loss = train_step(
            model,
            optimizer,
            x,
            labels.to(device, non_blocking=True),
            precision=config.precision,
            micro_batch=config.micro_batch,
        )
        loss_sum += loss * len(labels)
    return float(loss_sum) / len(order)  # one read per epoch, as in ``evaluate``


EpochCallback = Callable[[int, int, dict[str, float]], None]


def is_trained(info: ExpertInfo | None, config: ExpertConfig) -> bool:
    """A complete expert with at least the epochs ``config`` asks for: nothing left to train."""
    return info is not None and info.complete and info.epochs_completed >= config.num_epochs


def train_expert(
    expert_id: int,
    config: ExpertConfig,
    train: ClipDataset,
    test: ClipDataset,
    store: TrajectoryStore,
    *,
    device: torch.device | str = "cpu",
    on_epoch: EpochCallback | None = None,
) -> ExpertInfo:
    """Train (or finish training) expert ``expert_id`` into ``store``; returns its record.

    A complete expert is returned untouched; a partial one resumes after its last snapshot.
    ``on_epoch(expert_id, epoch, metrics)`` is called after each stored snapshot. ``config``
    must have ``flip`` resolved (``ExpertConfig.for_data``) and match the store's settings.
    """
    device = torch.device(device)
    seed = config.expert_seed(expert_id)
    done = store.expert(expert_id)
    if is_trained(done, config):
        return done
    precision = used_precision(config.precision, device)
    writer = store.writer(
        expert_id, seed=seed, planned_epochs=config.num_epochs, precision=precision
    )
    model = build_network(store.settings, seed, device)
    if writer.next_epoch == 0:
        started = time.perf_counter()
        metrics = evaluate(model, test, config, device)
        # epoch 0 trains nothing: its seconds are those of the initial evaluation
        metrics |= {"train_loss": math.nan, "epoch_seconds": time.perf_counter() - started}
        writer.write_snapshot(0, flatten_params(model).cpu(), metrics)
        if on_epoch:
            on_epoch(expert_id, 0, metrics)
    else:
        last = writer.last_snapshot()
        torch.nn.utils.vector_to_parameters(last.to(device), model.parameters())
    for epoch in range(writer.next_epoch, config.num_epochs + 1):
        started = time.perf_counter()
        generator = torch_generator(seed, "epoch", epoch)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(derive_seed(seed, "dropout", epoch))
            train_loss = train_epoch(model, train, config, seed, epoch, generator, device)
        metrics = evaluate(model, test, config, device) | {
            "train_loss": train_loss,
            "epoch_seconds": time.perf_counter() - started,
        }
        # flatten_params copies: a snapshot never aliases the live weights (a reference bug)
        writer.write_snapshot(epoch, flatten_params(model).cpu(), metrics)
        if on_epoch:
            on_epoch(expert_id, epoch, metrics)
    return writer.finish()
