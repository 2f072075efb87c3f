"""Neural feature regression: FRePo and S2D-FRePo (SPEC §4), as the reference ran them.

Per iteration, a random network of a pool embeds the synthetic videos (with a graph) and a
class-balanced real batch (without); kernel ridge regression on those features predicts the
real labels from the synthetic ones:

    K_ss = Φ_s Φ_sᵀ,  K_ts = Φ_t Φ_sᵀ,  ŷ_t = K_ts (K_ss + λ·tr(K_ss)/n_s · I)⁻¹ Y_s
    loss = mean over real clips of ‖ŷ_t − y_t‖² + label margin

Labels are centred: a real clip's target is one-hot − 1/C; the synthetic label vectors start
at (one-hot − 1/C) / √(C/10) and are learnt (``learn_labels``, on in every FRePo script of the
reference), with the label-margin term −mean_s min(top1(Y_s) − top2(Y_s), 1/C) keeping each
learnt label decisive. The regulariser's trace takes part in the gradient. Adam moves the
synthetic parameters (FRePo: the videos, lr_img; S2D-FRePo: the dynamic memory, lr_dynamic,
and H, lr_hal) and the labels (lr_label), every group's lr following a cosine from its value
to one floor shared by all groups, as the reference's ``CosineAnnealingLR(eta_min=0.1 *
lr_h)``: ``final_lr_factor`` x lr_hal (S2D-FRePo), x lr_img (FRePo). A group whose lr is
below the floor rises to it, as PyTorch's schedule does.

The pool: ``pool_size`` ConvNet3D parameter vectors. After its use, a network takes one Adam
step (``online_lr``) of MSE on the synthetic set and its labels (the values of that iteration,
before the update; at most ``online_batch`` of them, drawn at random); a network that has
taken ``online_steps`` steps starts again from a fresh seeded initialisation. Its lr follows
the reference's schedule, a linear warm-up from 0.01x over ``online_warmup`` steps times a
cosine to 0.01x over ``online_steps`` (``online_lr_at``), counted, like Adam's bias
correction, from its optimiser's creation. The initial ages are staggered (only the life
left, as the reference's), so the pool always holds networks at every stage of training.
Vectors, Adam moments, ages and step counts are checkpointed: a resumed run repeats an
uninterrupted one bit for bit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from s2d_ray.methods.dm import REAL_CHUNK
from s2d_ray.methods.init import IntegratorInit, build_memory, real_initialised_videos, s2d_groups
from s2d_ray.methods.registry import DistillContext, DistillMethod, register_method
from s2d_ray.models import create, flatten_params, functional_forward
from s2d_ray.seeding import derive_seed, numpy_rng, torch_generator
from s2d_ray.synthetic.temporal import TemporalConfig

# SPEC §5: FRePo and S2D-FRePo sets are evaluated as FRePo's own code does (its
# ``evaluate_synset``): AdamW, warm-up then cosine, MSE on label vectors, 1000 epochs, and
# no per-batch standardisation (its evaluation loop feeds the clips as they are).
FREPO_PROTOCOL = {
    "optimizer": "adamw",
    "lr": 1e-4,
    "weight_decay": 5e-4,
    "schedule": "warmup_cosine",
    "loss": "mse",
    "epochs": 1000,
    "standardize": False,
}


class FRePoConfig(TemporalConfig):
    lr_img: float = Field(default=1e-3, gt=0)
    batch_real: int = Field(default=16, ge=1, description="real clips per class per iteration")
    pool_size: int = Field(default=10, ge=1)
    online_steps: int = Field(default=100, ge=1, description="a pool network's life in steps")
    online_lr: float = Field(default=1e-4, gt=0, description="Adam lr of the pool's networks")
    online_warmup: int = Field(default=500, ge=1, description="steps of the pool's lr warm-up")
    online_batch: int = Field(default=500, ge=1, description="synthetic videos per pool step")
    ridge: float = Field(default=1e-6, gt=0, description="λ, relative to tr(K_ss)/n_s")
    learn_labels: bool = True
    lr_label: float = Field(default=1e-3, gt=0, description="Adam lr of learnt labels")
    final_lr_factor: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="the synthetic lrs' cosine ends at this share of lr_img (S2D: lr_hal)",
    )
    network: str = "convnet3d"


class S2DFRePoConfig(FRePoConfig):
    lr_dynamic: float = Field(default=1e-4, gt=0)
    lr_hal: float = Field(default=1e-3, gt=0)
    dpc: int = Field(default=1, ge=1)
    integrator: str = "conv3d"
    integrator_init: IntegratorInit = "default"


def kernel_ridge_predict(
    support: torch.Tensor, support_targets: torch.Tensor, query: torch.Tensor, ridge: float
) -> torch.Tensor:
    """KRR with the linear kernel on features: predictions for ``query`` (n_q, d) from
    ``support`` (n_s, d) labelled ``support_targets`` (n_s, k). The regulariser
    λ·tr(K_ss)/n_s is part of the graph. Solved in float64: λ is tiny relative to the
    kernel's scale."""
    k_ss = (support @ support.T).double()
    k_qs = (query @ support.T).double()
    n = k_ss.shape[0]
    eye = torch.eye(n, dtype=k_ss.dtype, device=k_ss.device)
    reg = ridge * torch.trace(k_ss) / n
    alpha = torch.linalg.solve(k_ss + reg * eye, support_targets.double())
    return (k_qs @ alpha).to(support.dtype)


def centred_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot − 1/C: FRePo's regression targets."""
    return F.one_hot(labels, num_classes).float() - 1.0 / num_classes


def label_margin(vectors: torch.Tensor) -> torch.Tensor:
    """−mean over label vectors of min(top1 − top2, 1/C): rewards decisive learnt labels."""
    top = vectors.topk(2, dim=1).values
    gap = torch.clamp(top[:, 0] - top[:, 1], max=1.0 / vectors.shape[1])
    return -gap.mean()


def online_lr_at(config: FRePoConfig, age: int) -> float:
    """The pool's lr at a network's ``age``: torch's LinearLR (from 0.01x over
    ``online_warmup`` steps) chained with CosineAnnealingLR (to 0.01x over ``online_steps``),
    in closed form."""
    warm = 0.01 + 0.99 * min(age, config.online_warmup) / config.online_warmup
    life = min(age, config.online_steps) / config.online_steps
    cosine = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * life))
    return config.online_lr * warm * cosine


class ModelPool:
    """Flat parameter vectors of ``size`` networks trained online (see the module doc)."""

    BETAS = (0.9, 0.999)

    def __init__(self, config: FRePoConfig, context: DistillContext) -> None:
        self.config, self.context = config, context
        real = context.real
        self.net = create(config.network, num_classes=real.num_classes, clip_shape=real.clip_shape)
        self.net = self.net.to(context.device).requires_grad_(False)
        size, steps = config.pool_size, config.online_steps
        self.params = torch.stack([self._fresh(m, generation=0) for m in range(size)])
        self.first_moments = torch.zeros_like(self.params)
        self.second_moments = torch.zeros_like(self.params)
        ages = [m * steps // size for m in range(size)]  # staggered lives
        self.ages = torch.tensor(ages, dtype=torch.int64)
        # Adam's steps since the network's optimiser was made: its bias correction and lr
        # schedule start from 0 with every network, staggered or fresh, as the reference's
        self.updates = torch.zeros(size, dtype=torch.int64)
        self.generations = torch.zeros(size, dtype=torch.int64)

    def _fresh(self, member: int, generation: int) -> torch.Tensor:
        real = self.context.real
        seed = derive_seed(self.context.seed, "frepo-pool", member, generation)
        net = create(
            self.config.network, num_classes=real.num_classes, clip_shape=real.clip_shape, seed=seed
        )
        return flatten_params(net).to(self.context.device)

    def member(self, iteration: int) -> int:
        """A random network of the pool, drawn from (seed, iteration)."""
        rng = numpy_rng(self.context.seed, "frepo-member", iteration)
        return int(rng.integers(self.config.pool_size))

    def embed(self, m: int, x: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        return functional_forward(self.net, self.params[m], x, method="embed")

    def train_step(self, m: int, videos: torch.Tensor, targets: torch.Tensor, seed: int) -> None:
        """One Adam step of network ``m``: MSE on (at most ``online_batch`` of) the detached
        synthetic videos and their label vectors."""
        config, device = self.config, self.context.device
        if len(videos) > config.online_batch:
            pick = torch.randperm(len(videos), generator=torch_generator(seed, "batch"))
            pick = pick[: config.online_batch].to(videos.device)
            videos, targets = videos[pick], targets[pick]
        flat = self.params[m].clone().requires_grad_(True)
        self.net.train()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)  # dropout
            logits = functional_forward(self.net, flat, videos.detach())
        loss = F.mse_loss(logits.float(), targets.detach())
        (grad,) = torch.autograd.grad(loss, flat)
        done = int(self.updates[m])
        b1, b2 = self.BETAS
        with torch.no_grad():
            self.first_moments[m].mul_(b1).add_(grad, alpha=1 - b1)
            self.second_moments[m].mul_(b2).addcmul_(grad, grad, value=1 - b2)
            t = done + 1
            step = online_lr_at(config, done) / (1 - b1**t)
            denom = (self.second_moments[m] / (1 - b2**t)).sqrt_().add_(1e-8)
            self.params[m].addcdiv_(self.first_moments[m], denom, value=-step)
        self.ages[m] += 1
        self.updates[m] += 1
        if int(self.ages[m]) >= config.online_steps:  # its life is over: start again
            self.generations[m] += 1
            self.params[m] = self._fresh(m, int(self.generations[m]))
            self.first_moments[m].zero_()
            self.second_moments[m].zero_()
            self.ages[m] = 0
            self.updates[m] = 0

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "pool.params": self.params,
            "pool.first_moments": self.first_moments,
            "pool.second_moments": self.second_moments,
            "pool.ages": self.ages,
            "pool.updates": self.updates,
            "pool.generations": self.generations,
        }


class _FeatureRegression(DistillMethod):
    def _setup(self, config: FRePoConfig, context: DistillContext) -> None:
        self.pool = ModelPool(config, context)
        classes = self.synthetic.slot_classes().to(context.device)
        num_classes = context.real.num_classes
        self.initial_labels = centred_labels(classes, num_classes) / math.sqrt(num_classes / 10)
        self.labels_groups = []
        if config.learn_labels:
            labels = self.synthetic.learn_labels(self.initial_labels)
            self.labels_groups = [{"params": [labels], "lr": config.lr_label}]

    def _adam(self, groups: list[dict], floor_of: float) -> None:
        """Adam over ``groups`` and the labels; every lr's cosine ends at final_lr_factor x
        ``floor_of`` (the reference's one eta_min)."""
        self.optimizers = [torch.optim.Adam(groups + self.labels_groups)]
        self.base_lrs = [g["lr"] for g in self.optimizers[0].param_groups]
        self.lr_floor = self.config.final_lr_factor * floor_of

    def _schedule(self, iteration: int) -> None:
        """Each group's lr at ``iteration``: a cosine from its value to the shared floor."""
        total = self.context.iterations
        if not total:
            return
        cosine = 0.5 * (1 + math.cos(math.pi * min(iteration, total) / total))
        for group, base in zip(self.optimizers[0].param_groups, self.base_lrs, strict=True):
            group["lr"] = self.lr_floor + (base - self.lr_floor) * cosine

    def loss(self, iteration: int) -> torch.Tensor:
        return self._loss(iteration)[0]

    def _loss(self, iteration: int):
        context = self.context
        real = context.real
        generator = torch_generator(context.seed, "frepo-iteration", iteration)
        m = self.pool.member(iteration)
        videos, targets = self.synthetic.materialize(generator)
        learnt = targets.is_floating_point()
        # fixed labels: the centred, scaled vectors learnt ones start from (slot-major)
        support_targets = targets if learnt else self.initial_labels
        query, query_labels = [], []
        with torch.no_grad():
            for c in range(real.num_classes):
                clips = real.class_clips(c, self.config.batch_real, generator)
                for start in range(0, len(clips), REAL_CHUNK):
                    chunk = real.to_float(clips[start : start + REAL_CHUNK], generator, flip=True)
                    query.append(self.pool.embed(m, chunk))
                query_labels += [c] * len(clips)
        query = torch.cat(query)
        labels = torch.tensor(query_labels, device=query.device)
        query_targets = centred_labels(labels, real.num_classes)
        support = self.pool.embed(m, videos)
        predicted = kernel_ridge_predict(support, support_targets, query, self.config.ridge)
        loss = (predicted - query_targets).square().sum(1).mean()
        if learnt:
            loss = loss + label_margin(targets)
        return loss, m, videos, support_targets

    def step(self, iteration: int) -> dict[str, float]:
        self._schedule(iteration)
        loss, m, videos, support_targets = self._loss(iteration)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        seed = derive_seed(self.context.seed, "frepo-online", iteration)
        self.pool.train_step(m, videos, support_targets, seed)
        return {"loss": float(loss.detach())}

    def extra_state(self) -> dict[str, torch.Tensor]:
        return self.pool.state()

    def eval_overrides(self) -> dict:
        """SPEC §5: FRePo sets are evaluated as FRePo's own code does."""
        return dict(FREPO_PROTOCOL)


@register_method("frepo")
class FRePo(_FeatureRegression):
    """FRePo baseline: real-initialised full videos."""

    Config = FRePoConfig

    def __init__(self, config: FRePoConfig, context: DistillContext) -> None:
        super().__init__(config, context)
        self.synthetic = real_initialised_videos(config, context)
        self._setup(config, context)
        self._adam([{"params": [self.synthetic.items], "lr": config.lr_img}], config.lr_img)


@register_method("s2d-frepo")
class S2DFRePo(_FeatureRegression):
    """S2D stage 2 with feature regression, on the frozen static memory."""

    Config = S2DFRePoConfig
    needs_static = True

    def __init__(self, config: S2DFRePoConfig, context: DistillContext) -> None:
        super().__init__(config, context)
        self.synthetic = build_memory(config, context)
        self._setup(config, context)
        self._adam(s2d_groups(self.synthetic, config), config.lr_hal)
