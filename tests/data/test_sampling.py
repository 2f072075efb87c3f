import numpy as np
import pytest

from s2d_ray.data.sampling import ShortVideoError, clip_indices
from s2d_ray.data.spec import ClipSpec


def spec(**kw):
    base = {"frames": 16, "size": 112, "sampling": "stride", "stride": 4}
    return ClipSpec(**(base | kw))


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize(("n", "skip"), [(64, 4), (200, 4), (63, 3), (40, 2), (16, 1), (31, 1)])
def test_stride_rule_matches_reference(n, skip):
    """skip = 4 if n >= 64 else n // 16; 16 frames at that step always fit."""
    for seed in range(20):
        idx = clip_indices(n, spec(), clip=0, num_clips=1, rng=rng(seed))
        assert len(idx) == 16
        assert np.all(np.diff(idx) == skip)
        assert idx[0] >= 0 and idx[-1] < n


def test_stride_clips_of_one_video_start_in_stratified_slices():
    # n = 100: starts 0..39 are valid (16 frames at stride 4 span 61); 4 clips, 10 starts each
    for seed in range(50):
        starts = [
            clip_indices(100, spec(), clip=k, num_clips=4, rng=rng(seed))[0] for k in range(4)
        ]
        assert all(10 * k <= s < 10 * (k + 1) for k, s in enumerate(starts)), starts
    many = {clip_indices(100, spec(), clip=3, num_clips=4, rng=rng(s))[0] for s in range(300)}
    assert many == set(range(30, 40))
    # more clips than valid starts: every clip still valid
    assert all(clip_indices(62, spec(), clip=k, num_clips=5, rng=rng())[-1] <= 61 for k in range(5))


def test_stride_start_is_uniform_over_all_valid_starts():
    starts = {clip_indices(70, spec(), clip=0, num_clips=1, rng=rng(s))[0] for s in range(400)}
    assert starts == set(range(70 - 15 * 4))


def test_centred_is_evenly_spaced_and_centred():
    idx = clip_indices(80, spec(frames=8, sampling="centred"), clip=0, num_clips=1, rng=rng())
    assert idx == [5, 15, 25, 35, 45, 55, 65, 75]


def test_centred_spreads_several_clips_over_phases_deterministically():
    s = spec(frames=4, sampling="centred")
    clips = [clip_indices(40, s, clip=k, num_clips=3, rng=rng(k)) for k in range(3)]
    assert clips == [[1, 11, 21, 31], [5, 15, 25, 35], [8, 18, 28, 38]]
    assert clips == [clip_indices(40, s, clip=k, num_clips=3, rng=rng(99)) for k in range(3)]


def test_segments_draw_one_frame_inside_each_segment():
    s = spec(frames=8, sampling="segments")
    seen = set()
    for seed in range(50):
        idx = clip_indices(100, s, clip=0, num_clips=1, rng=rng(seed))
        assert all(12 * k <= i < 12.5 * (k + 1) + 1 for k, i in enumerate(idx))
        assert idx == sorted(idx)
        seen.add(tuple(idx))
    assert len(seen) > 40


@pytest.mark.parametrize("sampling", ["stride", "centred", "segments"])
def test_short_video_pad_repeats_last_frame(sampling):
    idx = clip_indices(5, spec(sampling=sampling, short="pad"), clip=0, num_clips=1, rng=rng())
    assert idx == [0, 1, 2, 3, 4] + [4] * 11


def test_short_video_loop_wraps():
    idx = clip_indices(5, spec(short="loop"), clip=0, num_clips=1, rng=rng())
    assert idx == [i % 5 for i in range(16)]


def test_short_video_reject_says_how_to_keep_it():
    with pytest.raises(ShortVideoError, match="5 frames but a clip needs 16.*--short pad"):
        clip_indices(5, spec(short="reject"), clip=0, num_clips=1, rng=rng())


def test_empty_video_is_an_error_under_every_policy():
    for short in ("pad", "loop", "reject"):
        with pytest.raises(ShortVideoError, match="no decodable frames"):
            clip_indices(0, spec(short=short), clip=0, num_clips=1, rng=rng())


def test_clip_spec_rejects_bad_values():
    with pytest.raises(ValueError):
        ClipSpec(frames=0, size=112)
    with pytest.raises(ValueError):
        ClipSpec(frames=16, size=112, sampling="random")
    with pytest.raises(ValueError):
        ClipSpec(frames=16, size=112, colour="red")
