"""MTT and S2D-MTT: the two unrolls give the same gradients, the loss is 1 at syn_lr = 0, only
learnable tensors and syn_lr get gradients, and stores for other data are refused."""

from __future__ import annotations

import pytest
import torch

from s2d_ray.experts.store import TrajectoryStore
from s2d_ray.methods import DistillContext, get_method
from s2d_ray.methods.mtt import open_experts
from s2d_ray.synthetic import SyntheticImages

SMALL = {"syn_steps": 3, "batch_syn": 5, "max_start_epoch": 2, "expert_epochs": 1, "lr_img": 100.0}


@pytest.fixture(scope="module")
def static(real):
    gen = torch.Generator().manual_seed(0)
    return SyntheticImages(
        torch.randn(real.num_classes, 3, 64, 64, generator=gen), real.num_classes
    )


def build(name, real, experts, static, **kw):
    cls = get_method(name)
    settings = {**SMALL, "experts": experts, **kw}
    if name == "s2d-mtt":
        settings.pop("lr_img")
        settings |= {"lr_dynamic": 100.0, "lr_hal": 1e-3}
    context = DistillContext(real, ipc=1, seed=0, static=static)
    return cls(cls.Config(**settings), context)


def grads(method, unroll):
    for optimizer in method.optimizers:
        optimizer.zero_grad(set_to_none=True)
    if unroll == "full":
        loss = method.loss(0)
        loss.backward()
    else:
        loss = method._constant_memory_backward(0)
    return float(loss.detach()), [p.grad.clone() for p in method.learnable()]


@pytest.mark.parametrize("name", ["mtt", "s2d-mtt"])
def test_constant_memory_unroll_gives_the_full_unrolls_gradients(
    name, real, embedded_experts, static
):
    method = build(name, real, embedded_experts, static)
    full_loss, full = grads(method, "full")
    constant_loss, constant = grads(method, "constant")
    assert constant_loss == pytest.approx(full_loss, rel=1e-5)
    assert len(full) == len(constant) >= 2  # the data (or dynamic memory and H) and syn_lr
    for a, b in zip(full, constant, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5 * float(a.abs().max())), (
            (a - b).abs().max()
        )
        assert a.abs().sum() > 0


def test_loss_is_one_at_zero_step_size(real, embedded_experts, static):
    method = build("mtt", real, embedded_experts, static)
    with torch.no_grad():
        method.syn_lr.zero_()
    assert float(method.loss(0).detach()) == pytest.approx(1.0, abs=1e-6)


def test_syn_lr_is_learnt_and_kept_above_its_floor(real, embedded_experts, static):
    method = build("mtt", real, embedded_experts, static, lr_lr=1e3)
    out = method.step(0)
    assert out["syn_lr"] != pytest.approx(0.01) and out["syn_lr"] >= 0.001
    assert method.eval_overrides() == {"lr": pytest.approx(out["syn_lr"])}
    assert any(p is method.syn_lr for p in method.learnable())


def test_stores_for_other_data_or_too_short_are_refused(
    real, embedded_experts, tiny_shards, tmp_path, static
):
    from s2d_ray.methods import RealData

    other = RealData.open(tiny_shards)
    cls = get_method("mtt")
    with pytest.raises(ValueError, match="trained on dataset fingerprint"):
        open_experts(
            cls.Config(**SMALL, experts=embedded_experts), DistillContext(other, ipc=1, seed=0)
        )
    too_long = cls.Config(**{**SMALL, "max_start_epoch": 5}, experts=embedded_experts)
    with pytest.raises(ValueError, match=r"the 6 snapshots.*expert 0: 4"):
        open_experts(too_long, DistillContext(real, ipc=1, seed=0))
    with pytest.raises(ValueError, match="--experts STORE"):
        open_experts(cls.Config(**SMALL), DistillContext(real, ipc=1, seed=0))
    assert TrajectoryStore.open(embedded_experts).settings["clip_shape"] == [8, 3, 64, 64]


def test_s2d_mtt_sets_of_five_per_class_train_in_the_references_batch_of_128(
    real, embedded_experts, static
):
    """s2d_MTT_ms_5.sh evaluates with --batch_train 128; the ipc-1 scripts and MTT with 256."""
    from s2d_ray.evaluation import EvalConfig, with_own_settings

    def own(name, ipc):
        method = build(name, real, embedded_experts, static)
        method.context = DistillContext(real, ipc=ipc, seed=0, static=static)
        return method.eval_overrides()

    assert "batch_size" not in own("s2d-mtt", 1) and "batch_size" not in own("mtt", 5)
    five = own("s2d-mtt", 5)
    assert five["batch_size"] == 128 and five["lr"] == pytest.approx(0.01)
    assert with_own_settings(EvalConfig(), five).batch_size == 128
    assert with_own_settings(EvalConfig(batch_size=64), five).batch_size == 64  # the user's
