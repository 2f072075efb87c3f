"""FRePo: kernel ridge regression on a known linear problem, the online pool's lives, learnt
labels (learnt, stored, trained on by regression), and the evaluation settings of SPEC §6."""

from __future__ import annotations

import pytest
import torch

from s2d_ray.evaluation import EvalConfig, supervised_loss, with_own_settings
from s2d_ray.methods import DistillContext, get_method
from s2d_ray.methods.frepo import (
    FREPO_PROTOCOL,
    kernel_ridge_predict,
    label_margin,
    online_lr_at,
)
from s2d_ray.synthetic import load_set, save_set

SMALL = {"batch_real": 2, "pool_size": 2, "online_steps": 2, "lr_img": 1e-2}


def test_kernel_ridge_regression_recovers_a_linear_map():
    # as many independent features as support points: the linear kernel's KRR with a
    # vanishing ridge interpolates, so it predicts any linear target exactly off the support
    gen = torch.Generator().manual_seed(0)
    support = torch.randn(6, 6, generator=gen)
    weights = torch.randn(6, 3, generator=gen)
    query = torch.randn(20, 6, generator=gen)
    predicted = kernel_ridge_predict(support, support @ weights, query, ridge=1e-9)
    assert torch.allclose(predicted, query @ weights, atol=1e-3)
    # a large ridge shrinks the predictions toward zero
    shrunk = kernel_ridge_predict(support, support @ weights, query, ridge=10.0)
    assert shrunk.norm() < 0.5 * predicted.norm()


def test_kernel_ridge_regression_is_differentiable_in_the_support():
    gen = torch.Generator().manual_seed(1)
    support = torch.randn(4, 8, generator=gen, requires_grad=True)
    targets = torch.eye(4)
    loss = kernel_ridge_predict(support, targets, torch.randn(5, 8, generator=gen), 1e-6).sum()
    loss.backward()
    assert torch.isfinite(support.grad).all() and support.grad.abs().sum() > 0


def build(real, **kw):
    cls = get_method("frepo")
    return cls(cls.Config(**{**SMALL, **kw}), DistillContext(real, ipc=1, seed=0))


def test_pool_networks_train_online_with_adam_and_restart_after_their_life(real):
    method = build(real)
    pool = method.pool
    assert pool.ages.tolist() == [0, 1]  # staggered lives
    start = pool.params.clone()
    videos, _ = method.synthetic.materialize()
    targets = method.synthetic.label_vectors.detach()
    pool.train_step(0, videos, targets, seed=0)
    assert pool.ages.tolist() == [1, 1] and not torch.equal(pool.params[0], start[0])
    # Adam's first step moves every coordinate by lr (at age 0: 0.01 x 1e-4) or leaves it
    moved = (pool.params[0] - start[0]).abs()
    lr = online_lr_at(method.config, 0)
    assert lr == pytest.approx(1e-4 * 0.01)
    assert float(moved.max()) == pytest.approx(lr, rel=1e-3)
    assert float(pool.second_moments[0].abs().sum()) > 0
    assert pool.updates.tolist() == [1, 0]
    pool.train_step(1, videos, targets, seed=1)  # network 1 reaches its life of 2 steps
    # its first Adam step, at its optimiser's first lr, though its life was half over
    assert pool.ages.tolist() == [1, 0] and pool.generations.tolist() == [0, 1]
    assert pool.updates.tolist() == [1, 0]
    assert not torch.equal(pool.params[1], start[1])
    assert float(pool.first_moments[1].abs().sum()) == 0


def test_a_random_pool_member_per_iteration(real):
    pool = build(real, pool_size=10).pool
    members = [pool.member(i) for i in range(40)]
    assert members == [pool.member(i) for i in range(40)]  # seeded by (seed, iteration)
    assert members != [i % 10 for i in range(40)] and len(set(members)) > 5


def test_the_pool_lr_warms_up_and_anneals_as_the_reference_chains_them(real):
    config = build(real).config.model_copy(update={"online_steps": 100, "online_warmup": 500})
    lrs = [online_lr_at(config, age) for age in range(101)]
    assert lrs[0] == pytest.approx(1e-6)
    assert max(lrs) < 0.2e-4  # a life of 100 steps ends inside the 500-step warm-up
    assert lrs[100] == pytest.approx(1e-4 * (0.01 + 0.99 * 0.2) * 0.01)


def test_labels_are_centred_scaled_learnt_and_stored(real, tmp_path):
    method = build(real, lr_label=0.1)
    initial = method.synthetic.label_vectors.detach().clone()
    # one-hot - 1/C, divided by sqrt(C/10) = 1 for the 10 embedded classes
    assert torch.allclose(initial, torch.eye(10) - 0.1)
    method.step(0)
    learnt = method.synthetic.label_vectors.detach()
    assert not torch.equal(learnt, initial)
    videos, targets = method.synthetic.materialize()
    assert targets.is_floating_point() and targets.shape == (10, 10)

    save_set(method.synthetic, tmp_path / "set", {})
    loaded, manifest = load_set(tmp_path / "set")
    assert torch.equal(loaded.materialize()[1], learnt)
    assert manifest["bytes"] == (videos.numel() + learnt.numel()) * 4

    logits = torch.zeros(10, 10)
    assert float(supervised_loss(logits, learnt)) == pytest.approx(
        float(learnt.square().sum(1).mean())
    )
    frozen = build(real, learn_labels=False)
    assert frozen.synthetic.label_vectors is None and len(frozen.optimizers[0].param_groups) == 1


def test_label_margin_rewards_decisive_labels_up_to_one_over_c():
    vectors = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.3, 0.25, 0.0, 0.0]])
    # gaps 0.8 (capped at 1/C = 0.25) and 0.05
    assert float(label_margin(vectors)) == pytest.approx(-(0.25 + 0.05) / 2)


def test_the_ridge_s_trace_is_in_the_gradient():
    gen = torch.Generator().manual_seed(2)
    support = torch.randn(3, 5, generator=gen, requires_grad=True)
    query = torch.randn(4, 5, generator=gen)
    targets = torch.eye(3)
    kernel_ridge_predict(support, targets, query, ridge=0.5).sum().backward()
    with_trace = support.grad.clone()
    support.grad = None
    # the same prediction with the regulariser held constant gives another gradient
    k = (support @ support.T).double()
    reg = 0.5 * torch.trace(k).detach() / 3
    alpha = torch.linalg.solve(k + reg * torch.eye(3, dtype=k.dtype), targets.double())
    ((query @ support.T).double() @ alpha).sum().backward()
    assert not torch.allclose(with_trace, support.grad)


def test_the_synthetic_lrs_follow_a_cosine_to_one_shared_floor(real):
    """As the reference's CosineAnnealingLR(eta_min=0.1 * lr_h): one absolute floor for every
    group (FRePo: 0.1 lr_img), not a tenth of each group's own lr."""
    cls = get_method("frepo")
    context = DistillContext(real, ipc=1, seed=0, iterations=10)
    method = cls(cls.Config(**SMALL), context)
    lrs = []
    for iteration in (0, 5, 10):
        method._schedule(iteration)
        lrs.append([g["lr"] for g in method.optimizers[0].param_groups])
    assert lrs[0] == pytest.approx([1e-2, 1e-3])  # videos at lr_img, labels at lr_label
    assert lrs[1] == pytest.approx([0.55e-2, 1e-3])  # the labels' lr is the floor already
    assert lrs[2] == pytest.approx([1e-3, 1e-3])


def test_s2d_frepo_lrs_end_at_a_tenth_of_lr_hal(real, tmp_path):
    """S2D-FRePo: the dynamic memory (lr_dynamic 0.1), H (lr_hal 1e-3) and the labels all end
    at 1e-4, the reference's eta_min = 0.1 * lr_h."""
    from s2d_ray.synthetic import SyntheticImages

    _, c, h, w = real.clip_shape
    static = SyntheticImages(torch.randn(real.num_classes, c, h, w), real.num_classes)
    cls = get_method("s2d-frepo")
    context = DistillContext(real, ipc=1, seed=0, static=static, iterations=10)
    config = cls.Config(**SMALL, lr_dynamic=0.1, lr_hal=1e-3, lr_label=3e-3)
    method = cls(config, context)
    method._schedule(10)
    assert [g["lr"] for g in method.optimizers[0].param_groups] == pytest.approx([1e-4] * 3)
    method._schedule(5)
    halfway = [0.1, 1e-3, 3e-3]
    assert [g["lr"] for g in method.optimizers[0].param_groups] == pytest.approx(
        [1e-4 + (lr - 1e-4) / 2 for lr in halfway]
    )


def test_frepo_sets_are_evaluated_as_spec_says_unless_the_user_says_otherwise(real):
    from s2d_ray.cli import build_parser
    from s2d_ray.commands.evaluate import protocol_from_args

    own = build(real).eval_overrides()
    assert own == FREPO_PROTOCOL
    assert with_own_settings(EvalConfig(), own).model_dump()["epochs"] == 1000
    # the reference's FRePo evaluation feeds clips unstandardised, `s2d evaluate` included
    flags = build_parser().parse_args(["evaluate", "set", "--data", "d"])
    assert with_own_settings(protocol_from_args(flags), own).standardize is False
    assert with_own_settings(EvalConfig(), {}).standardize is True  # every other set
    given = with_own_settings(EvalConfig(epochs=50), own)
    assert (given.epochs, given.lr, given.optimizer) == (50, 1e-4, "adamw")
