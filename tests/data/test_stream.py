"""Reading clips: the streamed dataset, the row index, the node cache, frames, transforms,
the Ray Data reader."""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from s2d_ray.data import PrepareConfig, prepare
from s2d_ray.data.cache import NodeCache
from s2d_ray.data.clips import ClipDataset, FrameView
from s2d_ray.data.stream import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipShards,
    ClipTransform,
    standardize,
)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    prepare(PrepareConfig(dataset="embedded", out=str(out), videos_per_shard=16), progress=False)
    return str(out)


def test_items_and_batches_agree_and_equal_the_in_memory_reader(shard_dir, tmp_path):
    ds = ClipDataset(shard_dir, "train", cache=NodeCache(tmp_path, 2**30))
    assert len(ds) == 1440 and ds.num_classes == 10  # 36 of 40 videos per class: 4 are val
    clip, label = ds[123]
    assert clip.dtype == torch.uint8 and clip.shape == (8, 64, 64, 3)
    batch, labels = ds.batch([123, 5])
    assert torch.equal(batch[0], clip) and labels[0] == label
    everything = ClipDataset(shard_dir, "train", memory="all")
    pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:300]
    for reader in (ds, ds, ClipDataset(shard_dir, "train", cache=None)):  # cold, warm, none
        frames, y = reader.batch(pick)
        assert torch.equal(frames, everything.batch(pick)[0])
        assert torch.equal(y, everything.labels[pick])


def test_row_groups_are_small_and_the_index_is_prepares(shard_dir):
    shards = ClipShards(shard_dir)
    assert set(shards.manifest["row_index"]) == {"train", "val", "test"}
    for entry in shards.manifest["shards"]:
        meta = pq.ParquetFile(os.path.join(shard_dir, entry["path"])).metadata
        clip_bytes = int(np.prod(shards.clip_shape))
        assert all(
            meta.row_group(g).num_rows * clip_bytes <= 4 * 2**20 for g in range(meta.num_row_groups)
        )
    index = shards.row_index("train")
    assert len(index) == shards.manifest["row_index"]["train"]["rows"] == 1440
    assert len(index.video_keys) == 360 and len(index.row_groups()) > 10
    first = ClipDataset(shards, "train", cache=None)
    table = pq.read_table(os.path.join(shard_dir, index.shards[3]))
    rows = np.flatnonzero(index.shard == 3)
    assert table.column("video_id").to_pylist() == [
        index.video_keys[v].split("/", 1)[1] for v in index.video[rows]
    ]
    assert first.clip_array(int(rows[-1])).tobytes() == table.column("frames")[-1].as_py()


def test_shards_from_before_the_index_read_the_same(shard_dir, tmp_path):
    old = tmp_path / "old"
    os.symlink(shard_dir, tmp_path / "link")
    old.mkdir()
    for name in os.listdir(shard_dir):
        if name not in ("dataset.json", "index"):
            os.symlink(os.path.join(shard_dir, name), old / name)
    manifest = json.loads(Path(shard_dir, "dataset.json").read_text())
    del manifest["row_index"]
    (old / "dataset.json").write_text(json.dumps(manifest))
    new, derived = ClipDataset(shard_dir, "test"), ClipDataset(str(old), "test")
    assert derived.video_keys == new.video_keys
    assert torch.equal(derived.batch(range(len(new)))[0], new.batch(range(len(new)))[0])


def test_prefetched_batches_are_the_plan_in_order(shard_dir):
    ds = ClipDataset(shard_dir, "val")
    plan = torch.randperm(len(ds), generator=torch.Generator().manual_seed(2)).split(7)
    for prefetch in (0, 3):
        got = list(ds.batches(plan, prefetch=prefetch))
        assert len(got) == len(plan)
        for (frames, y), p in zip(got, plan, strict=True):
            assert torch.equal(frames, ds.batch(p)[0]) and torch.equal(y, ds.labels[p])


def test_the_node_cache_is_shared_bounded_and_survives_crashes(shard_dir, tmp_path, monkeypatch):
    cache = NodeCache(tmp_path / "cache", 2**30)
    ds = ClipDataset(shard_dir, "train", cache=cache)
    expected = ds.batch(range(0, 1440, 37))[0]
    files = sorted((tmp_path / "cache").rglob("*.u8"))
    assert files and len(files) < len(ds.index.row_groups())  # only the groups it touched

    def no_decode(*args):
        raise AssertionError("read the shards although the node cache holds the row group")

    other = ClipDataset(shard_dir, "train", cache=NodeCache(tmp_path / "cache", 2**30))
    monkeypatch.setattr(other, "_decode", no_decode)
    assert torch.equal(other.batch(range(0, 1440, 37))[0], expected)  # a second process
    monkeypatch.undo()
    crashed = files[0].with_name(f".tmp-{files[0].name}.999999999.dead")
    crashed.write_bytes(b"torn")
    small = NodeCache(tmp_path / "cache", 3 * files[0].stat().st_size)
    bounded = ClipDataset(shard_dir, "train", cache=small)
    assert torch.equal(bounded.batch(range(0, 1440, 37))[0], expected)
    assert small.size_bytes() <= small.limit_bytes and not crashed.exists()


def test_missing_shard_directory_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no clip shards.*s2d prepare"):
        ClipShards(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist.*s2d prepare"):
        ClipShards(str(tmp_path / "typo"))


def test_frame_view_is_one_frame_per_video_from_any_of_its_clips(shard_dir):
    ds = ClipDataset(shard_dir, "train")
    view = FrameView(ds, seed=0)
    assert len(view) == ds.num_videos == 360 and len(ds) == 1440
    frames = [view[v][0] for v in range(20)]
    assert all(f.shape == (64, 64, 3) for f in frames)
    for v, f in enumerate(frames):
        row, t = view.source(v)
        assert row in ds.video_rows[v] and torch.equal(f, ds[row][0][t])
        assert view[v][1] == int(ds.labels[row])
    assert all(torch.equal(view[v][0], frames[v]) for v in range(20))  # fixed within an epoch
    used_clips = set()
    for epoch in range(12):
        view.set_epoch(epoch)
        used_clips |= {view.source(0)[0]}
    assert used_clips == set(ds.video_rows[0].tolist())  # every stored clip of the video
    view.set_epoch(1)
    assert sum(not torch.equal(view[v][0], frames[v]) for v in range(20)) > 10


def test_transform_layout_and_imagenet_normalisation():
    clips = torch.full((2, 4, 8, 8, 3), 255, dtype=torch.uint8)
    x = ClipTransform(normalize="imagenet", standardize=False)(clips)
    assert x.shape == (2, 4, 3, 8, 8) and x.dtype == torch.float32
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert torch.allclose(x[0, 0, :, 0, 0], torch.tensor(expected))
    images = ClipTransform(normalize="none", standardize=False)(clips[:, 0])
    assert images.shape == (2, 3, 8, 8) and torch.all(images == 1)


def test_per_batch_standardisation_is_one_scalar_over_the_batch():
    clips = torch.randint(0, 255, (3, 4, 8, 8, 3), dtype=torch.uint8)
    x = ClipTransform(standardize=True)(clips)
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-5
    assert torch.equal(x, standardize(ClipTransform(standardize=False)(clips)))  # in place
    per_channel = x.movedim(2, 0).reshape(3, -1).mean(1)
    assert not torch.allclose(per_channel, torch.zeros(3), atol=1e-3)  # not per channel


def test_flip_mirrors_whole_clips_all_frames_alike():
    clips = torch.zeros((64, 3, 4, 4, 3), dtype=torch.uint8)
    clips[..., :, 0, :] = 255  # left column bright in every frame
    x = ClipTransform(normalize="none", standardize=False, flip=True)(
        clips, generator=torch.Generator().manual_seed(0)
    )
    left = x[..., 0].mean(dim=(2, 3)) > 0.5  # (B, T)
    assert torch.all(left == left[:, :1])  # same decision for every frame of a clip
    assert 10 < int(left[:, 0].sum()) < 54  # about half the clips flipped


@pytest.mark.slow
def test_ray_data_reader_yields_the_local_readers_batches(shard_dir, ray_local):
    ds = ClipDataset(shard_dir, "train")
    plan = ds.epoch_rows(seed=3, epoch=1)[torch.randperm(360)].split(64)
    streamed = list(ds.batches(plan, backend="ray"))
    assert len(streamed) == len(plan)
    for (frames, y), p in zip(streamed, plan, strict=True):
        assert torch.equal(frames, ds.batch(p)[0]) and torch.equal(y, ds.labels[p])


def test_two_processes_reading_at_once_share_one_copy_in_the_node_cache(shard_dir, tmp_path):
    import hashlib
    import subprocess
    import sys

    script = (
        "import hashlib, sys; from s2d_ray.data.clips import ClipDataset; "
        "ds = ClipDataset(sys.argv[1], 'train'); frames, _ = ds.batch(range(len(ds))); "
        "print(hashlib.sha256(frames.numpy().tobytes()).hexdigest())"
    )
    env = {**os.environ, "S2D_CACHE_DIR": str(tmp_path / "cache"), "S2D_CACHE_GIB": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, shard_dir], stdout=subprocess.PIPE,
                         env=env, text=True)
        for _ in range(2)
    ]  # fmt: skip
    digests = {p.communicate(timeout=300)[0].strip() for p in procs}
    direct = ClipDataset(shard_dir, "train", cache=None)
    frames = direct.batch(range(len(direct)))[0]
    assert digests == {hashlib.sha256(frames.numpy().tobytes()).hexdigest()}
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert len([n for n in cached if n.endswith(".u8")]) == len(direct.index.row_groups())
    assert [n for n in cached if not n.endswith(".u8")] == [".lock"]  # no temporaries left


def test_frames_are_the_clips_frames_read_alone(shard_dir, tmp_path):
    picks = np.array([5, 700, 6, 1439])
    t = np.array([0, 7, 3, 3])
    everything = ClipDataset(shard_dir, "train", memory="all")
    expected = everything.batch(picks)[0][torch.arange(4), torch.from_numpy(t)]
    for reader in (
        everything,
        ClipDataset(shard_dir, "train", cache=NodeCache(tmp_path, 2**30)),  # cold, then warm
        ClipDataset(shard_dir, "train", cache=NodeCache(tmp_path, 2**30)),
        ClipDataset(shard_dir, "train", cache=None),
    ):
        assert torch.equal(reader.frames(picks, t), expected)


def test_a_class_frame_is_the_frame_of_a_class_clip(shard_dir):
    """Static learning's frames: the frames the whole clips held, the same draws."""
    from s2d_ray.methods import RealData

    real = RealData.open(shard_dir)
    a, b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    clips = real.class_batch(2, 6, a)
    t = torch.randint(clips.shape[1], (6,), generator=a)
    assert torch.equal(real.class_frames(2, 6, b), clips[torch.arange(6), t])


def test_a_row_group_evicted_between_lookup_and_read_is_decoded_again(shard_dir, tmp_path):
    cache = NodeCache(tmp_path, 2**30)
    ds = ClipDataset(shard_dir, "test", cache=cache)
    expected = ds.batch(range(0, 300, 7))[0]
    cache.get = lambda key, build: tmp_path / "evicted.u8"  # another process deleted it
    assert torch.equal(ds.batch(range(0, 300, 7))[0], expected)
