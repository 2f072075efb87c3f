"""Temporal compression: segmentation for many (T, K, S), the hold expansion, the initial
frames, compressed sets' bytes and their save/load round trip, and clear errors."""

from __future__ import annotations

import pytest
import torch

from s2d_ray.synthetic import S2DMemory, SyntheticVideos, load_set, save_set
from s2d_ray.synthetic.temporal import (
    TemporalConfig,
    expand_time,
    expansion,
    expansion_index,
    initial_frames,
    segment_bounds,
    segment_sizes,
    split_evenly,
    temporal_layout,
)


@pytest.mark.parametrize(
    ("frames", "syn_frames", "segments", "real", "syn", "expanded"),
    [
        # one segment: each synthetic frame held over an equal share
        (8, 2, 1, [8], [2], [0, 0, 0, 0, 1, 1, 1, 1]),
        (8, 4, 2, [4, 4], [2, 2], [0, 0, 1, 1, 2, 2, 3, 3]),
        # one frame per segment: a still per segment
        (8, 2, 2, [4, 4], [1, 1], [0, 0, 0, 0, 1, 1, 1, 1]),
        # uneven: longer segments first, synthetic frames split evenly too
        (16, 5, 3, [6, 5, 5], [2, 2, 1], [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 4, 4]),
        (8, 3, 2, [4, 4], [2, 1], [0, 0, 1, 1, 2, 2, 2, 2]),
        # custom real sizes: the first synthetic frame stands for a short opening only
        (8, 2, [2, 6], [2, 6], [1, 1], [0, 0, 1, 1, 1, 1, 1, 1]),
        # no compression: the identity
        (8, 8, 4, [2, 2, 2, 2], [2, 2, 2, 2], list(range(8))),
    ],
)
def test_segments_and_the_hold_expansion(frames, syn_frames, segments, real, syn, expanded):
    assert segment_sizes(frames, syn_frames, segments) == (real, syn)
    index = expansion_index(frames, syn_frames, segments).tolist()
    assert index == expanded
    # every synthetic frame is shown, in order, and only inside its own segment
    assert sorted(set(index)) == list(range(syn_frames)) and index == sorted(index)
    bounds_real = torch.tensor([0, *real]).cumsum(0).tolist()
    bounds_syn = torch.tensor([0, *syn]).cumsum(0).tolist()
    for s in range(len(real)):
        shown = index[bounds_real[s] : bounds_real[s + 1]]
        assert all(bounds_syn[s] <= k < bounds_syn[s + 1] for k in shown)


@pytest.mark.parametrize(
    ("frames", "syn_frames", "segments"), [(8, 2, 1), (16, 5, 3), (8, 2, [2, 6])]
)
def test_initial_frames_sit_in_the_span_each_synthetic_frame_holds(frames, syn_frames, segments):
    held = expansion_index(frames, syn_frames, segments)
    for k, t in enumerate(initial_frames(frames, syn_frames, segments).tolist()):
        assert int(held[t]) == k


def test_split_evenly():
    assert split_evenly(7, 3) == [3, 2, 2] and split_evenly(6, 6) == [1] * 6


@pytest.mark.parametrize(
    ("frames", "syn_frames", "segments", "message"),
    [
        (8, 1, 2, "fewer than the 2 segments"),
        (8, 9, 1, "--syn-frames must be in"),
        (8, 4, [3, 3], "must sum to 8"),
        (8, 4, 9, "cannot cut real clips of 8 frames"),
    ],
)
def test_impossible_layouts_say_which_flag_to_change(frames, syn_frames, segments, message):
    with pytest.raises(ValueError, match=message):
        segment_sizes(frames, syn_frames, segments)


def test_config_refuses_empty_or_zero_segments():
    for bad in (0, [], [4, 0]):
        with pytest.raises(ValueError, match="segments"):
            TemporalConfig(syn_frames=2, segments=bad)
    assert temporal_layout(8, TemporalConfig()) is None
    assert temporal_layout(8, TemporalConfig(syn_frames=2, segments=2)) == {
        "frames": 8,
        "syn_frames": 2,
        "segments": [4, 4],
    }


def test_compressed_videos_expand_on_use_and_store_only_their_frames(tmp_path):
    layout = temporal_layout(8, TemporalConfig(syn_frames=2, segments=2))
    items = torch.randn(6, 2, 3, 16, 16)
    videos = SyntheticVideos(items, 3, layout)
    expanded, labels = videos.materialize()
    assert expanded.shape == (6, 8, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(expanded[:, :4], items[:, :1].expand(-1, 4, -1, -1, -1))
    assert videos.storage_bytes() == items.numel() * 4  # a quarter of the expanded videos
    save_set(videos, tmp_path / "v", {})
    loaded, manifest = load_set(tmp_path / "v")
    assert manifest["layout"]["temporal"] == layout
    assert torch.equal(loaded.materialize()[0], expanded)


def test_compressed_s2d_memory_learns_short_dynamics(tmp_path):
    layout = temporal_layout(8, TemporalConfig(syn_frames=4, segments=2))
    gen = torch.Generator().manual_seed(0)
    memory = S2DMemory(
        torch.randn(3, 3, 16, 16, generator=gen), 3, frames=8, vpc=1, dpc=1, temporal=layout
    )
    assert memory.dynamic.shape == (3, 1, 4, 1, 16, 16)
    videos, _ = memory.materialize(gen)
    assert videos.shape == (3, 8, 3, 16, 16)
    assert torch.equal(videos[:, 0], videos[:, 1]) and not torch.equal(videos[:, 1], videos[:, 2])
    save_set(memory, tmp_path / "m", {})
    loaded, _ = load_set(tmp_path / "m")
    assert torch.equal(loaded.materialize()[0], memory.materialize()[0])


def test_linear_interpolation_blends_the_neighbouring_synthetic_frames():
    # one segment, 2 synthetic frames over 8 real: positions (u + 1/2) / 4 - 1/2, clamped
    first, second, weight = expansion(8, 2, 1, "linear")
    positions = [min(max((u + 0.5) * 2 / 8 - 0.5, 0.0), 1.0) for u in range(8)]
    assert weight.tolist() == pytest.approx([p - int(p) for p in positions])
    assert first.tolist() == [0, 0, 0, 0, 0, 0, 1, 1] and second.tolist() == [1] * 8
    videos = torch.stack([torch.zeros(1), torch.ones(1)]).view(1, 2, 1)  # frame k holds k
    layout = {"frames": 8, "syn_frames": 2, "segments": [8], "interpolation": "linear"}
    buffers = {"time_first": first, "time_second": second, "time_weight": weight}
    assert expand_time(videos, layout, buffers).flatten().tolist() == pytest.approx(positions)
    # two segments: nothing blends across the segment boundary
    first, second, _ = expansion(8, 4, 2, "linear")
    assert max(second[:4].tolist()) <= 1 and min(first[4:].tolist()) >= 2
    hold = expansion(8, 4, 2, "hold")
    assert hold[0].tolist() == expansion_index(8, 4, 2).tolist() and not hold[2].any()


def test_segment_bounds_cover_the_clip_in_order():
    assert segment_bounds(8, 1) == [(0, 8)]
    assert segment_bounds(8, 2) == [(0, 4), (4, 8)]
    assert segment_bounds(8, [2, 6]) == [(0, 2), (2, 8)]
