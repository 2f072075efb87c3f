"""One expert: snapshots, epochs, determinism and bit-identical resume."""

import itertools

import pytest
import torch

from s2d_ray.data import ArrowClipDataset, ClipShards
from s2d_ray.experts.store import StoreMismatchError, TrajectoryStore
from s2d_ray.experts.training import ExpertConfig, network_config, train_expert
from s2d_ray.models import create, flatten_params


def open_store(path, shards, config):
    net = network_config(config, shards.clip_shape, shards.num_classes)
    return TrajectoryStore(str(path), network_config=net, dataset_fingerprint=shards.fingerprint)


@pytest.fixture(scope="module")
def data(tiny_shards):
    shards = ClipShards(tiny_shards)
    return shards, ArrowClipDataset(shards, "train"), ArrowClipDataset(shards, "test")


def test_default_epochs_are_only_what_distillation_reads():
    assert ExpertConfig().num_epochs == 11  # max_start_epoch 10 + expert_epochs 1
    assert ExpertConfig(max_start_epoch=3, expert_epochs=2).num_epochs == 5
    assert ExpertConfig(epochs=50).num_epochs == 50
    with pytest.raises(ValueError):
        ExpertConfig(lr_teacher=0)


def test_snapshots_are_distinct_copies_from_init_to_last_epoch(tmp_path, data):
    shards, train, test = data
    config = ExpertConfig(epochs=3, batch_size=4)
    store = open_store(tmp_path / "s", shards, config)
    seen = []
    info = train_expert(0, config, train, test, store, on_epoch=lambda e, ep, m: seen.append(ep))
    assert seen == [0, 1, 2, 3] and info.complete and info.epochs_completed == 3
    snaps = [store.load_snapshot(0, e) for e in range(4)]
    for a, b in itertools.pairwise(snaps):
        assert not torch.equal(a, b)  # the reference's CPU snapshots all aliased the final weights
    init = create("convnet3d", num_classes=3, clip_shape=(8, 3, 64, 64), seed=config.expert_seed(0))
    assert torch.equal(snaps[0], flatten_params(init))
    assert len(info.metrics["test_acc"]) == 4 and len(info.metrics["train_loss"]) == 4
    assert all(0 <= a <= 1 for a in info.metrics["test_acc"])


def test_experts_differ_by_id_and_reproduce_by_seed(tmp_path, data):
    shards, train, test = data
    config = ExpertConfig(epochs=1, batch_size=4)
    a, b = open_store(tmp_path / "a", shards, config), open_store(tmp_path / "b", shards, config)
    for store in (a, b):
        for expert_id in (0, 1):
            train_expert(expert_id, config, train, test, store)
    assert torch.equal(a.load_snapshot(1, 1), b.load_snapshot(1, 1))
    assert not torch.equal(a.load_snapshot(0, 1), a.load_snapshot(1, 1))


def test_interrupted_expert_resumes_bit_identical(tmp_path, data):
    shards, train, test = data
    config = ExpertConfig(epochs=3, batch_size=4)
    clean = open_store(tmp_path / "clean", shards, config)
    train_expert(0, config, train, test, clean)

    crashed = open_store(tmp_path / "crashed", shards, config)

    def crash_after_epoch_1(expert_id, epoch, metrics):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_expert(0, config, train, test, crashed, on_epoch=crash_after_epoch_1)
    assert crashed.expert(0).epochs_completed == 1 and not crashed.expert(0).complete
    resumed_epochs = []
    train_expert(
        0, config, train, test, crashed, on_epoch=lambda e, ep, m: resumed_epochs.append(ep)
    )
    assert resumed_epochs == [2, 3]
    for epoch in range(4):
        assert torch.equal(clean.load_snapshot(0, epoch), crashed.load_snapshot(0, epoch))


def test_complete_expert_is_not_retrained_and_can_be_extended(tmp_path, data):
    shards, train, test = data
    store = open_store(tmp_path / "s", shards, ExpertConfig(epochs=1, batch_size=4))
    train_expert(0, ExpertConfig(epochs=1, batch_size=4), train, test, store)
    calls = []
    train_expert(
        0,
        ExpertConfig(epochs=1, batch_size=4),
        train,
        test,
        store,
        on_epoch=lambda *a: calls.append(a),
    )
    assert calls == []
    info = train_expert(0, ExpertConfig(epochs=2, batch_size=4), train, test, store)
    assert info.epochs_completed == 2 and info.complete


def test_a_store_never_mixes_experts_trained_with_other_settings(tmp_path, data):
    shards, _, _ = data
    open_store(tmp_path / "s", shards, ExpertConfig(epochs=1))
    open_store(tmp_path / "s", shards, ExpertConfig(epochs=5))  # longer: same trajectories
    with pytest.raises(StoreMismatchError):
        open_store(tmp_path / "s", shards, ExpertConfig(epochs=1, lr_teacher=0.02))
