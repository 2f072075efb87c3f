"""FRePo: kernel ridge regression on a known linear problem, the online pool's lives, learnt
labels (learnt, stored, trained on by regression), and the evaluation settings of SPEC §6."""

from __future__ import annotations

import pytest
import torch

from s2d_ray.evaluation import EvalConfig, supervised_loss, with_own_settings
from s2d_ray.methods import DistillContext, get_method
from s2d_ray.methods.frepo import kernel_ridge_predict
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


def test_pool_networks_train_online_and_restart_after_their_life(real):
    method = build(real)
    pool = method.pool
    assert pool.ages.tolist() == [0, 1]  # staggered lives
    start = pool.params.clone()
    method.step(0)  # network 0 trains once: age 1
    assert pool.ages.tolist() == [1, 1] and not torch.equal(pool.params[0], start[0])
    method.step(1)  # network 1 reaches its life of 2 steps: a fresh initialisation
    assert pool.ages.tolist() == [1, 0] and pool.generations.tolist() == [0, 1]
    assert not torch.equal(pool.params[1], start[1])
    assert float(pool.momenta[1].abs().sum()) == 0


def test_learnt_labels_move_are_stored_and_trained_on_by_regression(real, tmp_path):
    method = build(real, learn_labels=True, lr_label=0.1)
    one_hot = method.synthetic.label_vectors.detach().clone()
    assert torch.equal(one_hot, torch.eye(10))
    method.step(0)
    learnt = method.synthetic.label_vectors.detach()
    assert not torch.equal(learnt, one_hot)
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


def test_frepo_sets_are_evaluated_as_spec_says_unless_the_user_says_otherwise(real):
    own = build(real).eval_overrides()
    assert own == {"lr": 1e-4, "epochs": 1000}
    assert with_own_settings(EvalConfig(), own).model_dump()["epochs"] == 1000
    given = with_own_settings(EvalConfig(epochs=50), own)
    assert (given.epochs, given.lr) == (50, 1e-4)
