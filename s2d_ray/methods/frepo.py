"""Neural feature regression: FRePo and S2D-FRePo (SPEC §4).

Per iteration, one network of a pool, trained online on the synthetic set, embeds the
synthetic videos (with a graph) and a class-balanced real batch (without); kernel ridge
regression on those features predicts the real labels from the synthetic ones:

    K_ss = Φ_s Φ_sᵀ,  K_ts = Φ_t Φ_sᵀ,  ŷ_t = K_ts (K_ss + λ·tr(K_ss)/n_s · I)⁻¹ Y_s
    loss = mean over real clips of ‖ŷ_t − onehot(y_t)‖²

and Adam moves the synthetic parameters (FRePo: the videos, lr_img; S2D-FRePo: the dynamic
memory, lr_dynamic, and H, lr_hal) and, with ``learn_labels``, the label vectors Y_s.

The pool: ``pool_size`` ConvNet3D parameter vectors, used round robin. After its use, a
network takes one SGD step (momentum 0.9) on the whole synthetic set (the videos of that
iteration, before the update); a network that has taken ``online_steps`` steps starts again
from a fresh seeded initialisation. The initial ages are staggered, so the pool always holds
networks at every stage of training. The pool's vectors, momenta and ages are checkpointed,
so a resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from s2d_ray.methods.dm import REAL_CHUNK
from s2d_ray.methods.init import build_memory, real_initialised_videos, s2d_groups
from s2d_ray.methods.registry import DistillContext, DistillMethod, register_method
from s2d_ray.models import create, flatten_params, functional_forward
from s2d_ray.seeding import derive_seed, torch_generator
from s2d_ray.synthetic.base import supervised_loss
from s2d_ray.synthetic.temporal import TemporalConfig


class FRePoConfig(TemporalConfig):
    lr_img: float = Field(default=1e-3, gt=0)
    batch_real: int = Field(default=16, ge=1, description="real clips per class per iteration")
    pool_size: int = Field(default=10, ge=1)
    online_steps: int = Field(default=100, ge=1, description="a pool network's life in steps")
    online_lr: float = Field(default=0.01, gt=0)
    online_momentum: float = Field(default=0.9, ge=0, lt=1)
    ridge: float = Field(default=1e-6, gt=0, description="λ, relative to tr(K_ss)/n_s")
    learn_labels: bool = False
    lr_label: float = Field(default=1e-3, gt=0, description="Adam lr of learnt labels")
    network: str = "convnet3d"


class S2DFRePoConfig(FRePoConfig):
    lr_dynamic: float = Field(default=1e-4, gt=0)
    lr_hal: float = Field(default=1e-3, gt=0)
    dpc: int = Field(default=1, ge=1)
    integrator: str = "conv3d"


def kernel_ridge_predict(
    support: torch.Tensor, support_targets: torch.Tensor, query: torch.Tensor, ridge: float
) -> torch.Tensor:
    """KRR with the linear kernel on features: predictions for ``query`` (n_q, d) from
    ``support`` (n_s, d) labelled ``support_targets`` (n_s, k). Solved in float64: the
    regulariser is tiny relative to the kernel's scale."""
    k_ss = (support @ support.T).double()
    k_qs = (query @ support.T).double()
    n = k_ss.shape[0]
    reg = ridge * torch.trace(k_ss).detach() / n
    eye = torch.eye(n, dtype=k_ss.dtype, device=k_ss.device)
    alpha = torch.linalg.solve(k_ss + reg * eye, support_targets.double())
    return (k_qs @ alpha).to(support.dtype)


class ModelPool:
    """Flat parameter vectors of ``size`` networks trained online (see the module doc)."""

    def __init__(self, config: FRePoConfig, context: DistillContext) -> None:
        self.config, self.context = config, context
        real = context.real
        self.net = create(config.network, num_classes=real.num_classes, clip_shape=real.clip_shape)
        self.net = self.net.to(context.device).requires_grad_(False)
        size, steps = config.pool_size, config.online_steps
        self.params = torch.stack([self._fresh(m, generation=0) for m in range(size)])
        self.momenta = torch.zeros_like(self.params)
        ages = [m * steps // size for m in range(size)]  # staggered lives
        self.ages = torch.tensor(ages, dtype=torch.int64)
        self.generations = torch.zeros(size, dtype=torch.int64)

    def _fresh(self, member: int, generation: int) -> torch.Tensor:
        real = self.context.real
        seed = derive_seed(self.context.seed, "frepo-pool", member, generation)
        net = create(
            self.config.network, num_classes=real.num_classes, clip_shape=real.clip_shape, seed=seed
        )
        return flatten_params(net).to(self.context.device)

    def member(self, iteration: int) -> int:
        return iteration % self.config.pool_size

    def embed(self, m: int, x: torch.Tensor) -> torch.Tensor:
        return functional_forward(self.net, self.params[m], x, method="embed")

    def train_step(self, m: int, videos: torch.Tensor, targets: torch.Tensor, seed: int) -> None:
        """One SGD-momentum step of network ``m`` on the (detached) synthetic set."""
        flat = self.params[m].clone().requires_grad_(True)
        self.net.train()
        device = self.context.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)  # dropout
            logits = functional_forward(self.net, flat, videos.detach())
        loss = supervised_loss(logits.float(), targets.detach())
        (grad,) = torch.autograd.grad(loss, flat)
        with torch.no_grad():
            self.momenta[m].mul_(self.config.online_momentum).add_(grad)
            self.params[m].sub_(self.config.online_lr * self.momenta[m])
        self.ages[m] += 1
        if int(self.ages[m]) >= self.config.online_steps:  # its life is over: start again
            self.generations[m] += 1
            self.params[m] = self._fresh(m, int(self.generations[m]))
            self.momenta[m].zero_()
            self.ages[m] = 0

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "pool.params": self.params,
            "pool.momenta": self.momenta,
            "pool.ages": self.ages,
            "pool.generations": self.generations,
        }


class _FeatureRegression(DistillMethod):
    def _setup(self, config: FRePoConfig, context: DistillContext) -> None:
        self.pool = ModelPool(config, context)
        self.labels_optimizer = []
        if config.learn_labels:
            labels = self.synthetic.learn_labels()
            self.labels_optimizer = [torch.optim.Adam([labels], lr=config.lr_label)]

    def loss(self, iteration: int) -> torch.Tensor:
        return self._loss(iteration)[0]

    def _loss(self, iteration: int):
        context = self.context
        real = context.real
        generator = torch_generator(context.seed, "frepo-iteration", iteration)
        m = self.pool.member(iteration)
        videos, targets = self.synthetic.materialize(generator)
        support_targets = (
            targets if targets.is_floating_point() else F.one_hot(targets, real.num_classes).float()
        )
        query, query_labels = [], []
        with torch.no_grad():
            for c in range(real.num_classes):
                clips = real.sampler.sample(c, self.config.batch_real, generator)
                for start in range(0, len(clips), REAL_CHUNK):
                    chunk = real.to_float(clips[start : start + REAL_CHUNK])
                    query.append(self.pool.embed(m, chunk))
                query_labels += [c] * len(clips)
        query = torch.cat(query)
        query_targets = F.one_hot(torch.tensor(query_labels, device=query.device), real.num_classes)
        support = self.pool.embed(m, videos)
        predicted = kernel_ridge_predict(support, support_targets, query, self.config.ridge)
        loss = (predicted - query_targets.float()).square().sum(1).mean()
        return loss, m, videos, targets

    def step(self, iteration: int) -> dict[str, float]:
        loss, m, videos, targets = self._loss(iteration)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        seed = derive_seed(self.context.seed, "frepo-online", iteration)
        self.pool.train_step(m, videos, targets, seed)
        return {"loss": float(loss.detach())}

    def extra_state(self) -> dict[str, torch.Tensor]:
        return self.pool.state()

    def eval_overrides(self) -> dict:
        """SPEC §6: FRePo sets are evaluated at lr 1e-4 for 1000 epochs."""
        return {"lr": 1e-4, "epochs": 1000}


@register_method("frepo")
class FRePo(_FeatureRegression):
    """FRePo baseline: real-initialised full videos."""

    Config = FRePoConfig

    def __init__(self, config: FRePoConfig, context: DistillContext) -> None:
        super().__init__(config, context)
        self.synthetic = real_initialised_videos(config, context)
        self._setup(config, context)
        self.optimizers = [
            torch.optim.Adam([self.synthetic.items], lr=config.lr_img),
            *self.labels_optimizer,
        ]


@register_method("s2d-frepo")
class S2DFRePo(_FeatureRegression):
    """S2D stage 2 with feature regression, on the frozen static memory."""

    Config = S2DFRePoConfig
    needs_static = True

    def __init__(self, config: S2DFRePoConfig, context: DistillContext) -> None:
        super().__init__(config, context)
        self.synthetic = build_memory(config, context)
        self._setup(config, context)
        self.optimizers = [torch.optim.Adam(s2d_groups(self.synthetic, config))]
        self.optimizers += self.labels_optimizer
