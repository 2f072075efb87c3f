"""Streaming: Arrow dataset, per-class sampler, frame view, transforms, Ray Data."""

import numpy as np
import pytest
import torch

from s2d_ray.data import PrepareConfig, prepare
from s2d_ray.data.stream import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArrowClipDataset,
    ClassSampler,
    ClipCollate,
    ClipShards,
    ClipTransform,
    FrameView,
    ray_clip_dataset,
)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    prepare(PrepareConfig(dataset="embedded", out=str(out), videos_per_shard=16), progress=False)
    return str(out)


def test_arrow_dataset_items_and_batches_agree(shard_dir):
    ds = ArrowClipDataset(shard_dir, "train")
    assert len(ds) == 1440 and ds.num_classes == 10  # 36 of 40 videos per class: 4 are val
    clip, label = ds[123]
    assert clip.dtype == torch.uint8 and clip.shape == (8, 64, 64, 3)
    batch, labels = ds.batch([123, 5])
    assert torch.equal(batch[0], clip) and labels[0] == label
    assert ds.clip_array(5).flags.writeable is False  # a view into the Arrow buffer


def test_missing_shard_directory_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_data.py"):
        ClipShards(str(tmp_path))


def test_class_sampler_returns_only_that_class_reproducibly(shard_dir):
    ds = ArrowClipDataset(shard_dir, "train")
    sampler = ClassSampler(ds)
    a = sampler.sample(3, 16, torch.Generator().manual_seed(1))
    b = sampler.sample(3, 16, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (16, 8, 64, 64, 3)
    pool = {ds[int(i)][0].numpy().tobytes() for i in sampler.by_class[3]}
    assert all(clip.numpy().tobytes() in pool for clip in a)
    assert len({clip.numpy().tobytes() for clip in a}) == 16  # without replacement
    assert sampler.sample(3, 64).shape[0] == 64  # more than the class has: with replacement


def test_frame_view_is_one_frame_per_video_from_any_of_its_clips(shard_dir):
    ds = ArrowClipDataset(shard_dir, "train")
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
def test_ray_data_stream_yields_the_same_clips(shard_dir, ray_local):
    shards = ClipShards(shard_dir)
    ds = ray_clip_dataset(shards, "test")
    seen = {}
    for frames, labels in ds.iter_torch_batches(
        batch_size=64, collate_fn=ClipCollate(shards.clip_shape)
    ):
        assert frames.dtype == torch.uint8 and frames.shape[1:] == (8, 64, 64, 3)
        for clip, label in zip(frames, labels, strict=True):
            seen[clip.numpy().tobytes()] = int(label)
    arrow = ArrowClipDataset(shards, "test")
    expected = {arrow.clip_array(i).tobytes(): int(arrow.labels[i]) for i in range(len(arrow))}
    assert len(expected) == 300 and seen == expected
    assert np.bincount(list(seen.values())).tolist() == [30] * 10
