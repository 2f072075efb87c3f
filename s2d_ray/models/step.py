"""The one training step of the product's training loops (expert training, the evaluation
protocol on one network or on stacked repeats, the groups' frame network): forward, loss,
backward and update, with precision and micro-batching decided here and nowhere else. The
methods' differentiable unrolls on flat parameter vectors (MTT's student, FRePo's model pool)
are not optimiser steps and keep their own update.

Micro-batching splits a minibatch along its batch dimension and accumulates each part's
gradient, weighting each part's mean loss by its share of the batch, so the update equals
the whole batch's: exactly, up to float rounding, for these networks, which have no batch
statistics (no BatchNorm). Dropout draws its masks part by part: the same distribution as
one draw for the whole batch, other draws, and the same draws for the same seed and
micro-batch size. The activations of one part are alive at a time, which on a CPU cuts the
peak memory and the page-fault churn of allocating and freeing multi-GB activations.

The default, ``"auto"``, splits on the CPU only, into parts of ``AUTO_PART_ELEMENTS`` input
elements: 8 clips of 16x112² (49 of 8x64²). bench/train_loops.py measured a 200-clip step at
16x112², after a whole warm-up step, 1.8x faster in parts of 8 clips than whole (0.095
against 0.169 s per clip; peak 1.4 against 12.9 GiB; a first step, which also faults the
whole batch's memory in, 2.5x); at 8x64² parts and whole batches train equally fast once
warm (0.0195 against 0.0201 s per clip), parts in half the memory.
A GPU wants its whole batch; ``None`` never splits.

Input preparation (the per-batch standardisation of the reference) stays on the whole
batch, before the step, so micro-batching never changes what a network sees.

``max_grad_norm`` bounds the gradient's L2 norm before the update (torch's
``clip_grad_norm_`` rule; per repeat for stacked repeats). Below the bound the gradient is
multiplied by exactly 1, so a step that never reaches it is bit-identical to an unclipped one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Literal

import torch
from pydantic import Field

from s2d_ray.models.precision import Precision, autocast_context, fp32_math_context

MicroBatch = Annotated[int, Field(ge=1)] | Literal["auto"] | None
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

AUTO_PART_ELEMENTS = 8 * 16 * 3 * 112 * 112


def part_size(size: int, micro_batch: MicroBatch, clip_elements: int, *, cpu: bool = True) -> int:
    """Clips per part of a batch of ``size`` clips of ``clip_elements`` input elements each:
    the whole batch for None, at most ``micro_batch`` clips, or for "auto" as many clips as
    ``AUTO_PART_ELEMENTS`` holds (at least one) on a CPU and the whole batch elsewhere."""
    if micro_batch == "auto":
        micro_batch = max(1, AUTO_PART_ELEMENTS // max(1, clip_elements)) if cpu else None
    elif micro_batch is not None and (isinstance(micro_batch, str) or micro_batch < 1):
        raise ValueError(
            f"micro_batch must be 'auto', None (the whole batch) or at least 1: {micro_batch!r}"
        )
    return size if micro_batch is None else min(size, micro_batch)


def _part(x: torch.Tensor, micro_batch: MicroBatch, batch_dim: int = 0) -> int:
    size = x.shape[batch_dim]
    return part_size(size, micro_batch, x.numel() // max(1, size), cpu=x.device.type == "cpu")


@torch.no_grad()
def clip_grad_norm_(
    params: Iterable[torch.Tensor], max_norm: float, *, stacked: bool = False
) -> torch.Tensor:
    """Scale the gradients of ``params`` so their L2 norm is at most ``max_norm`` and return
    the norm before scaling; as torch's ``clip_grad_norm_`` (factor ``max_norm / (norm +
    1e-6)``, capped at 1). ``stacked``: every parameter holds R repeats along its first
    dimension (``torch.func.stack_module_state``), each clipped by its own norm."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if stacked:
        norm = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
    else:
        norm = torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt()
    factor = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.view(-1, *[1] * (g.dim() - 1)) if stacked else factor)
    return norm


def train_step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn = torch.nn.functional.cross_entropy,
    *,
    precision: Precision = "fp32",
    micro_batch: MicroBatch = "auto",
    batch_dim: int = 0,
    max_grad_norm: float | None = None,
) -> torch.Tensor:
    """One update from the minibatch ``(x, y)``; returns its mean loss, detached.

    ``forward`` maps inputs to logits (a module, or a vmapped call over stacked repeats with
    ``batch_dim=1``); ``loss_fn(logits, targets)`` is a mean over its part. ``precision``:
    how fp32 work runs on CUDA (``models/precision.py``; IEEE fp32 on a CPU); the loss is
    computed in fp32. ``max_grad_norm``: the bound on the gradient's norm (``clip_grad_norm_``;
    per repeat when ``batch_dim=1``, whose parameters are stacked repeats); None: unbounded.
    """
    size = x.shape[batch_dim]
    step = _part(x, micro_batch, batch_dim)
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=x.device)
    with fp32_math_context(x.device, precision):
        for xs, ys in zip(x.split(step, batch_dim), y.split(step, batch_dim), strict=True):
            with autocast_context(x.device, precision == "bf16"):
                logits = forward(xs)
            loss = loss_fn(logits.float(), ys) * (xs.shape[batch_dim] / size)
            loss.backward()
            total += loss.detach()
    if max_grad_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        clip_grad_norm_(params, max_grad_norm, stacked=batch_dim == 1)
    optimizer.step()
    return total


@torch.no_grad()
def predict(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    precision: Precision = "fp32",
    micro_batch: MicroBatch = "auto",
) -> torch.Tensor:
    """Logits (fp32) for every clip of ``x``, computed a part (``part_size``) at a time."""
    step = _part(x, micro_batch)
    out = []
    with fp32_math_context(x.device, precision):
        for xs in x.split(step):
            with autocast_context(x.device, precision == "bf16"):
                out.append(forward(xs).float())
    return torch.cat(out)
