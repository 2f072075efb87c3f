"""One expert: snapshots, epochs, jittered clips and flips, determinism, bit-identical resume,
and a store that records how its experts were made."""

import itertools
import json
from types import SimpleNamespace

import pytest
import torch

from s2d_ray.data import DATASETS, ClipDataset, ClipShards
from s2d_ray.experts.store import StoreMismatchError, TrajectoryStore
from s2d_ray.experts.training import (
    ExpertConfig,
    train_epoch,
    train_expert,
    trajectory_settings,
)
from s2d_ray.models import create, flatten_params


def open_store(path, shards, config):
    settings = trajectory_settings(config, shards)
    return TrajectoryStore(str(path), settings=settings, dataset_fingerprint=shards.fingerprint)


def cfg(**kw) -> ExpertConfig:
    """Tiny-data expert config with flip resolved (video-folder's default is off)."""
    return ExpertConfig(**{"batch_size": 4, "flip": False, **kw})


@pytest.fixture(scope="module")
def data(tiny_shards):
    shards = ClipShards(tiny_shards)
    return shards, ClipDataset(shards, "train"), ClipDataset(shards, "test")


def test_default_epochs_are_only_what_distillation_reads():
    # MTT reads snapshot t0 + expert_epochs with t0 < max_start_epoch: at most 10 - 1 + 1
    assert ExpertConfig().num_epochs == 10
    assert ExpertConfig(max_start_epoch=3, expert_epochs=2).num_epochs == 4
    assert ExpertConfig(epochs=50).num_epochs == 50
    assert ExpertConfig().precision == "tf32"  # on CUDA; IEEE fp32 on a CPU
    with pytest.raises(ValueError):
        ExpertConfig(lr_teacher=0)
    with pytest.raises(ValueError):
        ExpertConfig(precision="fp16")


def test_snapshots_are_distinct_copies_from_init_to_last_epoch(tmp_path, data):
    shards, train, test = data
    config = cfg(epochs=3)
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
    assert all(s > 0 for s in info.metrics["epoch_seconds"])  # epoch 0: its evaluation


def test_experts_differ_by_id_and_reproduce_by_seed(tmp_path, data):
    shards, train, test = data
    config = cfg(epochs=1)
    a, b = open_store(tmp_path / "a", shards, config), open_store(tmp_path / "b", shards, config)
    for store in (a, b):
        for expert_id in (0, 1):
            train_expert(expert_id, config, train, test, store)
    assert torch.equal(a.load_snapshot(1, 1), b.load_snapshot(1, 1))
    assert not torch.equal(a.load_snapshot(0, 1), a.load_snapshot(1, 1))


def test_interrupted_expert_resumes_bit_identical_with_jitter_and_flips(tmp_path, data):
    shards, train, test = data
    config = cfg(epochs=3, flip=True)
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
    assert clean.settings["flip"] is True and clean.settings["clips_per_video"] == 4


def test_a_streamed_expert_equals_the_in_memory_one_across_an_interruption(tmp_path, data):
    """Streamed from row groups through a cold node cache, stopped after epoch 2 and resumed
    with fresh readers: the same snapshots, bit for bit, as from clips held in memory."""
    from s2d_ray.data.cache import NodeCache

    shards, _, _ = data
    config = cfg(epochs=3, flip=True)
    memory = open_store(tmp_path / "memory", shards, config)
    in_memory = [ClipDataset(shards, split, memory="all") for split in ("train", "test")]
    train_expert(0, config, *in_memory, memory)

    def streamed(cache):
        return [ClipDataset(shards, split, cache=cache) for split in ("train", "test")]

    store = open_store(tmp_path / "streamed", shards, config)

    def stop_after_epoch_2(expert_id, epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache = NodeCache(tmp_path / "cache", 2**30)
        train_expert(0, config, *streamed(cache), store, on_epoch=stop_after_epoch_2)
    train_expert(0, config, *streamed(None), store)
    for epoch in range(4):
        assert torch.equal(memory.load_snapshot(0, epoch), store.load_snapshot(0, epoch))


def test_complete_expert_is_not_retrained_and_can_be_extended(tmp_path, data):
    shards, train, test = data
    store = open_store(tmp_path / "s", shards, cfg(epochs=1))
    train_expert(0, cfg(epochs=1), train, test, store)
    calls = []
    train_expert(
        0,
        cfg(epochs=1),
        train,
        test,
        store,
        on_epoch=lambda *a: calls.append(a),
    )
    assert calls == []
    info = train_expert(0, cfg(epochs=2), train, test, store)
    assert info.epochs_completed == 2 and info.complete


def test_a_store_never_mixes_experts_trained_with_other_settings(tmp_path, data):
    shards, _, _ = data
    store = open_store(tmp_path / "s", shards, cfg(epochs=1))
    # the number of epochs is not identity: the same trajectories, just longer
    open_store(tmp_path / "s", shards, cfg(epochs=5, max_start_epoch=4, expert_epochs=2))
    with pytest.raises(StoreMismatchError, match=r"lr_teacher: stored 0\.01, asked 0\.02"):
        open_store(tmp_path / "s", shards, cfg(lr_teacher=0.02))
    with pytest.raises(StoreMismatchError, match=r"normalize: stored 'imagenet', asked 'none'"):
        open_store(tmp_path / "s", shards, cfg(normalize="none"))
    with pytest.raises(StoreMismatchError, match=r"flip: stored False, asked True"):
        open_store(tmp_path / "s", shards, cfg(flip=True))
    # micro-batches draw other dropout masks: another trajectory (None adds no key, so
    # stores made before micro-batching existed keep their identity with --micro-batch all)
    with pytest.raises(StoreMismatchError, match=r"micro_batch"):
        open_store(tmp_path / "s", shards, cfg(micro_batch=2))
    open_store(tmp_path / "s", shards, cfg(precision="bf16"))  # recorded per expert instead
    recorded = json.loads((tmp_path / "s" / "store.json").read_text())["settings"]
    assert recorded == store.settings
    assert {
        "network": "convnet3d",
        "num_classes": 3,
        "clip_shape": [8, 3, 64, 64],
        "normalize": "imagenet",
        "standardize": True,
        "flip": False,
        "clips_per_video": 4,
        "lr_teacher": 0.01,
        "batch_size": 4,
        "seed": 0,
    }.items() <= recorded.items()
    assert "seed_rule" in recorded and "optimizer" in recorded and recorded["micro_batch"] == "auto"
    assert "micro_batch" not in trajectory_settings(cfg(micro_batch=None), shards)


def test_each_epoch_draws_one_clip_per_video_from_its_stored_clips(data):
    shards, train, _ = data
    assert shards.train_clips_per_video == 4 and len(train) == 4 * train.num_videos
    epochs = [train.epoch_rows(seed=11, epoch=e) for e in range(8)]
    for rows in epochs:  # one pass over the videos: each video once
        assert len(rows) == train.num_videos
        assert sorted(train.video_keys[_video_of(train, int(r))] for r in rows) == sorted(
            train.video_keys
        )
    assert not torch.equal(epochs[0], epochs[1])  # two epochs, other clips of the same videos
    assert torch.equal(epochs[3], train.epoch_rows(seed=11, epoch=3))  # reproducible
    seen = {int(r) for rows in epochs for r in rows}
    assert len(seen) > 0.8 * len(train)  # over 8 epochs nearly every stored clip is used


def _video_of(train, row):
    return next(v for v, rows in enumerate(train.video_rows) if row in rows)


def test_train_epoch_trains_on_that_epochs_clips(data, monkeypatch):
    _, train, _ = data
    config = cfg(epochs=1)
    model = create("convnet3d", num_classes=3, clip_shape=(8, 3, 64, 64), seed=0)
    seen = []
    real = train._gather  # every read of clips goes through it
    monkeypatch.setattr(
        train, "_gather", lambda pos, *a: seen.extend(pos.tolist()) or real(pos, *a)
    )
    train_epoch(model, train, config, 5, 2, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert sorted(seen) == sorted(train.epoch_rows(5, 2).tolist())


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_flip_default_comes_from_the_dataset(name):
    shards = SimpleNamespace(manifest={"dataset": name})
    expected = name in ("ucf101", "miniucf", "hmdb51")
    assert ExpertConfig().for_data(shards).flip is expected
    assert DATASETS[name].flip is expected
    assert ExpertConfig(flip=not expected).for_data(shards).flip is (not expected)
    with pytest.raises(ValueError, match="for_data"):
        ExpertConfig().transform()


def test_store_extends_from_3_to_5_epochs_without_retraining(tmp_path, data):
    shards, train, test = data
    store = open_store(tmp_path / "s", shards, cfg(epochs=3))
    train_expert(0, cfg(epochs=3), train, test, store)
    expert_dir = tmp_path / "s" / "expert-0000"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in expert_dir.glob("epoch-*")}
    trained = []
    info = train_expert(
        0, cfg(epochs=5), train, test, store, on_epoch=lambda e, ep, m: trained.append(ep)
    )
    assert trained == [4, 5] and info.complete and info.epochs_completed == 5
    for name, (mtime, data_bytes) in before.items():
        path = expert_dir / name
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data_bytes
    straight = open_store(tmp_path / "straight", shards, cfg(epochs=5))
    train_expert(0, cfg(epochs=5), train, test, straight)
    assert torch.equal(store.load_snapshot(0, 5), straight.load_snapshot(0, 5))


def test_bf16_on_cpu_trains_and_records_fp32(tmp_path, data):
    shards, train, test = data
    config = cfg(epochs=1, precision="bf16")
    store = open_store(tmp_path / "s", shards, config)
    info = train_expert(0, config, train, test, store)
    assert info.precision == "fp32" and "precision" not in store.settings
