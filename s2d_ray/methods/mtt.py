"""Trajectory matching: MTT and S2D-MTT (SPEC §4), with a constant-memory unroll.

Per iteration: an expert and a start epoch t0 < max_start_epoch are drawn from the trajectory
store; θ0 = snapshot t0, θ* = snapshot t0 + expert_epochs. The student (the experts' network
called on a flat parameter vector) takes ``syn_steps`` SGD steps on synthetic minibatches of
``batch_syn`` with a learnable step size ``syn_lr``; the loss is ‖θ_N − θ*‖² / ‖θ0 − θ*‖².
Gradients reach the synthetic data (MTT: the videos; S2D-MTT: the dynamic memory and H) and
syn_lr (SGD, lr_lr 1e-5, momentum 0.5 for MTT and 0.9 for S2D-MTT, kept >= 0.001).

The student's minibatches are not standardised (``student_standardize`` False), as the
reference's are not (SPEC §1), although its experts trained on standardised batches. True
standardises them as the experts' were (the store's settings): the synthetic data are then
matched to the trajectory the experts followed on the inputs they saw.

``learn_syn_lr`` False freezes syn_lr at lr_teacher (the paper's choice in some cells, SPEC
§6); the set is then evaluated at lr_teacher.

Unrolls (``unroll``):

* ``full``: one autograd graph through all steps; memory grows with syn_steps.
* ``constant``: the forward pass keeps only θ_0..θ_N (one flat vector each, 14 MB for
  ConvNet3D) and each step's minibatch indices and dropout seed. The backward pass walks the
  steps in reverse, rebuilding one step's graph at a time (TESLA's idea): with v = dL/dθ_{i+1}
  and g_i = ∇θ CE(θ_i, X_i), dL/dθ_i = v − lr·H_i v, dL/dX_i = −lr·(∂g_i/∂X_i)ᵀ v and
  dL/dlr = −Σ_i ⟨v, g_i⟩, each from one double-backward of ⟨g_i, v⟩. Peak memory is one
  step's graph whatever syn_steps is.

``full`` is the default: ``constant`` was to be the default if at most 1.3x slower, and it
measured 1.22-1.28x slower at 8x64² and 1.29-1.39x at 16x112² (10 and 20 steps; it recomputes
one forward and backward per step), while its peak memory is 2.5-3.0 GiB at 16x112² against
6.7-11.5 GiB for ``full`` (bench/distill_step.py). Use ``constant`` when memory, not time, is
the limit (long unrolls, 16x112², small GPUs).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from s2d_ray.config import absolute_uri
from s2d_ray.data.stream import ClipShards, standardize
from s2d_ray.experts.store import TrajectoryStore
from s2d_ray.methods.init import (
    IntegratorInit,
    build_memory,
    real_initialised_videos,
    s2d_optimizers,
)
from s2d_ray.methods.registry import DistillContext, DistillMethod, register_method
from s2d_ray.models import (
    Precision,
    autocast_context,
    create,
    fp32_math_context,
    functional_forward,
)
from s2d_ray.seeding import derive_seed, numpy_rng, torch_generator
from s2d_ray.synthetic.temporal import TemporalConfig

MIN_SYN_LR = 0.001


class MTTConfig(TemporalConfig):
    experts: str | None = Field(default=None, description="trajectory store (path or URI)")
    _absolute = field_validator("experts")(absolute_uri)
    syn_steps: int = Field(default=10, ge=1)
    batch_syn: int = Field(default=50, ge=1)
    expert_epochs: int = Field(default=1, ge=1)
    max_start_epoch: int = Field(default=10, ge=1)
    lr_img: float = Field(default=1e5, gt=0)
    momentum: float = Field(default=0.5, ge=0, lt=1)
    lr_lr: float = Field(default=1e-5, gt=0)
    lr_teacher: float = Field(default=0.01, gt=0, description="syn_lr's initial value")
    learn_syn_lr: bool = Field(
        default=True, description="False: syn_lr frozen at lr_teacher (the paper's per cell)"
    )
    student_standardize: bool = Field(
        default=False,
        description="standardise the student's batches as the experts' (not the reference's)",
    )
    momentum_lr: float = Field(default=0.5, ge=0, lt=1)
    unroll: Literal["full", "constant"] = Field(
        default="full", description="constant: ~4x less memory, ~1.3x slower (bench)"
    )
    precision: Precision = Field(
        default="tf32", description="CUDA only: fp32 (IEEE), tf32 or bf16 (models/precision.py)"
    )


class S2DMTTConfig(MTTConfig):
    lr_dynamic: float = Field(default=1e4, gt=0)
    lr_hal: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.95, ge=0, lt=1)
    momentum_lr: float = Field(default=0.9, ge=0, lt=1)
    dpc: int = Field(default=1, ge=1)
    integrator: str = "conv3d"
    integrator_init: IntegratorInit = "default"


def open_experts(config: MTTConfig, context: DistillContext) -> TrajectoryStore:
    """The store, checked against the data and the run before any work."""
    if not config.experts:
        raise ValueError(
            "trajectory matching needs expert trajectories: pass --experts STORE, made by "
            "`s2d experts --data SHARDS --out STORE --num-experts N`"
        )
    real = context.real
    return check_experts(
        config.experts, real.shards, real.normalize, config.max_start_epoch, config.expert_epochs
    )


def check_experts(
    experts: str, shards: ClipShards, normalize: str, max_start_epoch: int, expert_epochs: int
) -> TrajectoryStore:
    """The store at ``experts``, if it fits these shards (read from their manifest alone, so
    a search checks it once on its driver) and holds an expert long enough for the unroll."""
    store = TrajectoryStore.open(experts)
    settings = store.settings
    if store.dataset_fingerprint != shards.fingerprint:
        raise ValueError(
            f"the experts in {experts} were trained on dataset fingerprint "
            f"{store.dataset_fingerprint}, the data is {shards.fingerprint}; train "
            "experts on these shards"
        )
    t, h, w, c = shards.clip_shape
    if list(settings["clip_shape"]) != [t, c, h, w] or settings["num_classes"] != (
        shards.num_classes
    ):
        raise ValueError(
            f"the experts' network takes {settings['num_classes']} classes of clips "
            f"{settings['clip_shape']}, the data has {shards.num_classes} of {[t, c, h, w]}"
        )
    if settings["normalize"] != normalize:
        raise ValueError(
            f"the experts saw {settings['normalize']!r} normalisation, this run uses {normalize!r}"
        )
    need = max_start_epoch + expert_epochs
    have = {e.expert_id: e.num_snapshots for e in store.experts()}
    if not any(n >= need for n in have.values()):
        shown = ", ".join(f"expert {k}: {v}" for k, v in have.items()) or "no complete experts"
        raise ValueError(
            f"{experts} has no complete expert with the {need} snapshots "
            f"max_start_epoch={max_start_epoch} + expert_epochs={expert_epochs} "
            f"need ({shown}); train the experts longer (--epochs {need - 1}) or lower "
            "--max-start-epoch"
        )
    return store


class _TrajectoryMatching(DistillMethod):
    def _setup_student(self, config: MTTConfig, context: DistillContext) -> None:
        self.store = open_experts(config, context)
        settings, real = self.store.settings, context.real
        self.student = (
            create(settings["network"], num_classes=real.num_classes, clip_shape=real.clip_shape)
            .to(context.device)
            .train()
        )
        self.student.requires_grad_(False)  # its parameters come from the flat vector
        self.standardize = config.student_standardize and bool(settings["standardize"])
        self.syn_lr = torch.tensor(
            config.lr_teacher, device=context.device, requires_grad=config.learn_syn_lr
        )
        self.lr_optimizers = []
        if config.learn_syn_lr:
            self.lr_optimizers = [
                torch.optim.SGD([self.syn_lr], lr=config.lr_lr, momentum=config.momentum_lr)
            ]

    # -- one iteration -------------------------------------------------------------------
    def loss(self, iteration: int) -> torch.Tensor:
        """The matching loss with the full graph (also the probe of tests)."""
        plan = self._plan(iteration)
        videos, labels = self.synthetic.materialize(plan["generator"])
        theta = plan["start"].clone().requires_grad_(True)
        params = theta
        for step, idx in enumerate(plan["batches"]):
            grad = self._student_grad(params, videos, labels, idx, plan, step, create_graph=True)
            params = params - self.syn_lr * grad
        return self._distance(params, plan)

    def step(self, iteration: int) -> dict[str, float]:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        with fp32_math_context(self.context.device, self.config.precision):
            if self.config.unroll == "full":
                loss = self.loss(iteration)
                loss.backward()
            else:
                loss = self._constant_memory_backward(iteration)
        for optimizer in self.optimizers:
            optimizer.step()
        with torch.no_grad():
            self.syn_lr.clamp_(min=MIN_SYN_LR)
        return {"loss": float(loss.detach()), "syn_lr": float(self.syn_lr.detach())}

    def _plan(self, iteration: int) -> dict:
        """Everything random about one iteration, drawn from (seed, iteration)."""
        config, seed = self.config, self.context.seed
        rng = numpy_rng(seed, "mtt-start", iteration)
        expert, t0 = self.store.sample_start(
            rng, max_start_epoch=config.max_start_epoch, expert_epochs=config.expert_epochs
        )
        start, target = self.store.load_pair(expert, t0, config.expert_epochs)
        generator = torch_generator(seed, "mtt-iteration", iteration)
        count = self.synthetic_count
        batches = [
            torch.randperm(count, generator=generator)[: config.batch_syn]
            for _ in range(config.syn_steps)
        ]
        device = self.context.device
        return {
            "start": start.to(device),
            "target": target.to(device),
            "batches": batches,
            "generator": torch_generator(seed, "mtt-pairing", iteration),
            "dropout": [
                derive_seed(seed, "mtt-dropout", iteration, s) for s in range(config.syn_steps)
            ],
        }

    def _student_grad(self, params, videos, labels, idx, plan, step, *, create_graph):
        x = videos[idx.to(videos.device)]
        x = standardize(x) if self.standardize else x
        device = self.context.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(plan["dropout"][step])  # the same mask when a step is rebuilt
            with autocast_context(device, self.config.precision == "bf16"):
                logits = functional_forward(self.student, params, x).float()
        ce = F.cross_entropy(logits, labels[idx.to(labels.device)])
        return torch.autograd.grad(ce, params, create_graph=create_graph)[0]

    def _distance(self, theta, plan) -> torch.Tensor:
        start, target = plan["start"], plan["target"]
        return (theta - target).square().sum() / (start - target).square().sum()

    def _constant_memory_backward(self, iteration: int) -> torch.Tensor:
        plan = self._plan(iteration)
        videos, labels = self.synthetic.materialize(plan["generator"])
        leaf = videos.detach().requires_grad_(True)  # gradients of all steps gather here
        lr = self.syn_lr.detach()
        thetas = [plan["start"]]
        for step, idx in enumerate(plan["batches"]):  # forward: parameter vectors only
            theta = thetas[-1].detach().requires_grad_(True)
            grad = self._student_grad(
                theta, leaf.detach(), labels, idx, plan, step, create_graph=False
            )
            thetas.append((theta - lr * grad).detach())
        final = thetas[-1].requires_grad_(True)
        loss = self._distance(final, plan)
        (v,) = torch.autograd.grad(loss, final)
        lr_grad, data_grad = torch.zeros((), device=lr.device), None
        for step in reversed(range(len(plan["batches"]))):  # backward: one step's graph
            theta = thetas[step].detach().requires_grad_(True)
            grad = self._student_grad(
                theta, leaf, labels, plan["batches"][step], plan, step, create_graph=True
            )
            dot = (grad * v).sum()
            h_v, x_v = torch.autograd.grad(dot, [theta, leaf])
            data_grad = -lr * x_v if data_grad is None else data_grad - lr * x_v
            lr_grad -= dot.detach()
            v = v - lr * h_v
        if self.syn_lr.requires_grad:
            self.syn_lr.grad = lr_grad
        if videos.requires_grad:
            videos.backward(data_grad)
        return loss

    @property
    def synthetic_count(self) -> int:
        return self.context.real.num_classes * self.context.ipc

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"syn_lr": self.syn_lr}

    def eval_overrides(self) -> dict:
        """SPEC §5: MTT sets are evaluated at the learned step size (lr_teacher if frozen)."""
        return {"lr": float(self.syn_lr.detach())}


@register_method("mtt")
class MTT(_TrajectoryMatching):
    """MTT baseline: real-initialised full videos."""

    Config = MTTConfig

    def __init__(self, config: MTTConfig, context: DistillContext) -> None:
        super().__init__(config, context)
        self._setup_student(config, context)
        self.synthetic = real_initialised_videos(config, context)
        self.optimizers = [
            torch.optim.SGD([self.synthetic.items], lr=config.lr_img, momentum=config.momentum),
            *self.lr_optimizers,
        ]


# The reference's S2D-MTT script for 5 videos per class (s2d_MTT_ms_5.sh) trains its
# evaluation networks in batches of 128, its ipc 1 scripts in the protocol's 256.
S2D_MTT_LARGE_IPC, S2D_MTT_LARGE_IPC_BATCH = 5, 128


@register_method("s2d-mtt")
class S2DMTT(_TrajectoryMatching):
    """S2D stage 2 with trajectory matching, on the frozen static memory."""

    Config = S2DMTTConfig
    needs_static = True

    def eval_overrides(self) -> dict:
        """The learnt step size, and from 5 videos per class on, the reference's batch of
        128 (where the user leaves the protocol's batch size)."""
        own = super().eval_overrides()
        if self.context.ipc >= S2D_MTT_LARGE_IPC:
            own["batch_size"] = S2D_MTT_LARGE_IPC_BATCH
        return own

    def __init__(self, config: S2DMTTConfig, context: DistillContext) -> None:
        super().__init__(config, context)
        self._setup_student(config, context)
        self.synthetic = build_memory(config, context)
        self.optimizers = [*s2d_optimizers(self.synthetic, config), *self.lr_optimizers]
