"""The evaluation protocol: determinism, final-epoch reporting, the lr schedule, groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2d_ray.data import ArrowClipDataset, ClipShards
from s2d_ray.evaluation import EvalConfig, class_groups, evaluate_real, evaluate_set, protocol
from s2d_ray.methods import RealData


@pytest.fixture(scope="module")
def real(embedded_small):
    return RealData.open(embedded_small)


@pytest.fixture(scope="module")
def data(real):
    return ArrowClipDataset(real.shards, "test"), *real.random_videos(1, seed=0)


def test_same_seed_same_accuracy_and_final_epoch_reporting(data, monkeypatch):
    test, items, labels = data
    config = EvalConfig(epochs=4, repeats=2, seed=5)
    calls = []
    real_test = protocol.test_network
    monkeypatch.setattr(
        protocol, "test_network", lambda *a, **k: calls.append(1) or real_test(*a, **k)
    )
    a = evaluate_set(items, labels, test, config)
    assert len(calls) == 2  # once per repeat, after its last epoch: never a best-of on test
    b = evaluate_set(items, labels, test, config)
    assert a.top1 == b.top1 and a.per_class == b.per_class
    c = evaluate_set(items, labels, test, config.model_copy(update={"seed": 6}))
    assert c.top1 != a.top1 or c.per_class != a.per_class
    assert len(a.top1) == 2 and a.mean == pytest.approx(np.mean(a.top1))
    assert all(0 <= t1 <= t5 <= 1 for t1, t5 in zip(a.top1, a.top5, strict=True))
    assert a.train_items == 10


def test_lr_is_cut_tenfold_at_the_half_with_a_fresh_optimiser(data, monkeypatch):
    test, items, labels = data
    made = []
    real_optimizer = protocol._optimizer
    monkeypatch.setattr(
        protocol, "_optimizer", lambda p, c, e: made.append((e, c.lr)) or real_optimizer(p, c, e)
    )
    evaluate_set(items, labels, test, EvalConfig(epochs=6, repeats=1, lr=0.05))
    assert made[0] == (0, 0.05) and made[1] == (3, 0.05)
    optimizer = real_optimizer([torch.zeros(1, requires_grad=True)], EvalConfig(epochs=6), 3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)
    assert optimizer.param_groups[0]["momentum"] == 0.9
    assert optimizer.param_groups[0]["weight_decay"] == 5e-4


def test_stacked_repeats_train_each_network_like_a_separate_one(data):
    """vmap repeats: same protocol, each repeat its own init; accuracy is comparable."""
    test, items, labels = data
    stacked = evaluate_set(items, labels, test, EvalConfig(epochs=3, repeats=2, repeat_mode="vmap"))
    sequential = evaluate_set(
        items, labels, test, EvalConfig(epochs=3, repeats=2, repeat_mode="sequential")
    )
    assert len(stacked.top1) == 2 and all(0 <= a <= 1 for a in stacked.top1)
    assert abs(stacked.mean - sequential.mean) < 0.25


def test_full_data_trains_on_one_jittered_clip_per_video(real, data):
    test = data[0]
    result = evaluate_real(real.train, test, EvalConfig(epochs=1, repeats=1))
    assert result.train_items == real.train.num_videos == 40
    assert 0 <= result.mean <= 1


def test_baselines_are_trained_once_per_dataset_and_protocol(real, data, monkeypatch):
    """The random real and full-data rows are cached beside the shards, keyed by protocol."""
    from s2d_ray.evaluation import full_data_baseline, random_baseline, report

    test = data[0]
    trained = []
    for name in ("evaluate_set", "evaluate_real"):
        original = getattr(report, name)
        monkeypatch.setattr(
            report, name, lambda *a, _f=original, _n=name, **k: trained.append(_n) or _f(*a, **k)
        )
    config = EvalConfig(epochs=1, repeats=1, seed=123)
    first = [
        random_baseline(real, test, 1, config),
        full_data_baseline(real, test, config, flip=False),
    ]
    again = [
        random_baseline(real, test, 1, config),
        full_data_baseline(real, test, config, flip=False),
    ]
    assert trained == ["evaluate_set", "evaluate_real"]
    assert [r.top1 for r in again] == [r.top1 for r in first]
    full_data_baseline(real, test, config.model_copy(update={"epochs": 2}), flip=False)
    random_baseline(real, test, 2, config)
    assert trained[2:] == ["evaluate_real", "evaluate_set"]  # another protocol or ipc: trained


def test_static_and_dynamic_groups_split_the_classes_and_are_cached(embedded_small):
    shards = ClipShards(embedded_small)
    groups = class_groups(shards, epochs=1, clips_per_class=4)
    assert sorted(groups["static"] + groups["dynamic"]) == list(range(10))
    assert len(groups["static"]) == 5 and groups["fingerprint"] == shards.fingerprint
    assert 8 in groups["static"]  # cross_still does not move
    again = class_groups(shards, epochs=1, clips_per_class=4)
    assert again == groups


def test_auto_stacks_repeats_only_for_ieee_fp32_on_cuda():
    # bench/gpu_loops.py: stacked (grouped) convolutions get no tensor cores
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert protocol.resolve_repeat_mode(EvalConfig(precision="fp32"), cuda) == "vmap"
    for precision in ("tf32", "bf16"):
        assert protocol.resolve_repeat_mode(EvalConfig(precision=precision), cuda) == "sequential"
    for precision in ("fp32", "tf32", "bf16"):
        assert protocol.resolve_repeat_mode(EvalConfig(precision=precision), cpu) == "sequential"
    chosen = EvalConfig(repeat_mode="vmap", precision="bf16")
    assert protocol.resolve_repeat_mode(chosen, cpu) == "vmap"
