"""Training one expert: the trajectory MTT matches (SPEC §4).

SGD with ``lr_teacher`` (no momentum, no weight decay), batch 256, cross-entropy. The flat
parameters are snapshotted at init and after every epoch into the trajectory store. Only
``max_start_epoch + expert_epochs`` epochs are trained by default: distillation never reads
later snapshots.

Every epoch draws its randomness (shuffle order, flips, dropout) from a generator seeded by
(seed, expert, epoch), so an expert resumed from its last snapshot ends bit-identical on CPU
to one trained without interruption.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from s2d_ray.config import StrictConfig, config_fingerprint
from s2d_ray.data.stream import ArrowClipDataset, ClipTransform
from s2d_ray.experts.store import ExpertInfo, TrajectoryStore
from s2d_ray.models import autocast_context, create, flatten_params
from s2d_ray.seeding import derive_seed, torch_generator


class ExpertConfig(StrictConfig):
    """How every expert of a farm is trained; the paper's values are the defaults."""

    network: str = "convnet3d"
    lr_teacher: float = Field(default=0.01, gt=0)
    batch_size: int = Field(default=256, ge=1)
    eval_batch_size: int = Field(default=256, ge=1)
    max_start_epoch: int = Field(default=10, ge=1)
    expert_epochs: int = Field(default=1, ge=1)
    epochs: int | None = Field(default=None, ge=1, description="default: max_start + expert")
    flip: bool = Field(default=False, description="off: flips swap left/right motion classes")
    normalize: Literal["imagenet", "none"] = "imagenet"
    standardize: bool = Field(default=True, description="the reference's per-batch standard.")
    mixed_precision: bool = Field(default=True, description="bf16 autocast, on CUDA only")
    seed: int = 0

    @property
    def num_epochs(self) -> int:
        return self.epochs or self.max_start_epoch + self.expert_epochs

    def transform(self) -> ClipTransform:
        return ClipTransform(normalize=self.normalize, standardize=self.standardize, flip=self.flip)

    def expert_seed(self, expert_id: int) -> int:
        return derive_seed(self.seed, "expert", expert_id)


def network_config(config: ExpertConfig, clip_shape: tuple[int, ...], num_classes: int) -> dict:
    """What a trajectory store records about the experts' network and training.

    ``training`` fingerprints every setting that shapes a trajectory (all but ``epochs`` and
    ``eval_batch_size``), so a store never mixes experts trained two ways. Clip shapes are
    (T, H, W, 3) on disk and (T, 3, H, W) for networks.
    """
    t, h, w, c = clip_shape
    training = config_fingerprint(config.model_dump(exclude={"epochs", "eval_batch_size"}))
    return {
        "name": config.network,
        "num_classes": num_classes,
        "clip_shape": [t, c, h, w],
        "training": training,
    }


def build_network(config: ExpertConfig, net: dict, seed: int, device: torch.device) -> nn.Module:
    model = create(
        net["name"], num_classes=net["num_classes"], clip_shape=tuple(net["clip_shape"]), seed=seed
    )
    return model.to(device)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ArrowClipDataset, config: ExpertConfig, device: torch.device
) -> dict[str, float]:
    """Top-1 accuracy and mean loss over every clip of ``data`` (deterministic test clips)."""
    model.eval()
    transform = ClipTransform(normalize=config.normalize, standardize=config.standardize)
    correct, loss_sum = 0, 0.0
    for start in range(0, len(data), config.eval_batch_size):
        frames, labels = data.batch(range(start, min(len(data), start + config.eval_batch_size)))
        labels = labels.to(device)
        with autocast_context(device, config.mixed_precision):
            logits = model(transform(frames, device=device))
        loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
    return {"test_acc": correct / len(data), "test_loss": loss_sum / len(data)}


def train_epoch(
    model: nn.Module,
    data: ArrowClipDataset,
    config: ExpertConfig,
    generator: torch.Generator,
    device: torch.device,
) -> float:
    """One pass of plain SGD over shuffled clips; returns the mean training loss."""
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr_teacher, momentum=0.0, weight_decay=0.0
    )
    transform = config.transform()
    order = torch.randperm(len(data), generator=generator)
    loss_sum = 0.0
    for start in range(0, len(order), config.batch_size):
        frames, labels = data.batch(order[start : start + config.batch_size])
        x = transform(frames, device=device, generator=generator)
        with autocast_context(device, config.mixed_precision):
            loss = F.cross_entropy(model(x).float(), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().item() * len(labels)
    return loss_sum / len(order)


EpochCallback = Callable[[int, int, dict[str, float]], None]


def is_trained(info: ExpertInfo | None, config: ExpertConfig) -> bool:
    """A complete expert with at least the epochs ``config`` asks for: nothing left to train."""
    return info is not None and info.complete and info.epochs_completed >= config.num_epochs


def train_expert(
    expert_id: int,
    config: ExpertConfig,
    train: ArrowClipDataset,
    test: ArrowClipDataset,
    store: TrajectoryStore,
    *,
    device: torch.device | str = "cpu",
    on_epoch: EpochCallback | None = None,
) -> ExpertInfo:
    """Train (or finish training) expert ``expert_id`` into ``store``; returns its record.

    A complete expert is returned untouched; a partial one resumes after its last snapshot.
    ``on_epoch(expert_id, epoch, metrics)`` is called after each stored snapshot.
    """
    device = torch.device(device)
    seed = config.expert_seed(expert_id)
    done = store.expert(expert_id)
    if is_trained(done, config):
        return done
    writer = store.writer(expert_id, seed=seed, planned_epochs=config.num_epochs)
    model = build_network(config, store.network_config, seed, device)
    if writer.next_epoch == 0:
        metrics = evaluate(model, test, config, device) | {"train_loss": math.nan}
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
            train_loss = train_epoch(model, train, config, generator, device)
        metrics = evaluate(model, test, config, device) | {
            "train_loss": train_loss,
            "epoch_seconds": time.perf_counter() - started,
        }
        # flatten_params copies: a snapshot never aliases the live weights (a reference bug)
        writer.write_snapshot(epoch, flatten_params(model).cpu(), metrics)
        if on_epoch:
            on_epoch(expert_id, epoch, metrics)
    return writer.finish()
