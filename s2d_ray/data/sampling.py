"""Which source frames make a clip. Indices are always returned in temporal order."""

from __future__ import annotations

import numpy as np

from s2d_ray.data.spec import ClipSpec


class ShortVideoError(ValueError):
    """The video has fewer frames than the clip spec allows under the ``reject`` policy."""


def clip_indices(
    num_source_frames: int, spec: ClipSpec, *, clip: int, num_clips: int, rng: np.random.Generator
) -> list[int]:
    """Source frame indices of clip ``clip`` of ``num_clips``, in temporal order.

    Indices are 0-based and non-decreasing, except that the ``loop`` short policy wraps.

    Random policies draw from ``rng``. ``stride`` draws clip k of K from the k-th of K equal
    slices of the valid starts; ``centred`` is deterministic and spreads several clips over
    evenly spaced phases (clip k of K at phase (k + 0.5) / K; K = 1 is the centred clip).
    """
    n, t = num_source_frames, spec.frames
    if n <= 0:
        raise ShortVideoError("the video has no decodable frames")
    if n < t:
        return _short_indices(n, spec)
    if spec.sampling == "stride":
        skip = spec.stride if n >= t * spec.stride else n // t
        starts = n - (t - 1) * skip  # valid starts: 0 .. starts - 1
        # Stratified: clip k of K starts in the k-th of K equal slices of the valid starts,
        # so a few stored clips cover the whole video (K = 1: uniform over all starts).
        low = clip * starts // num_clips
        high = max(low + 1, (clip + 1) * starts // num_clips)
        start = int(rng.integers(low, high))
        return [start + i * skip for i in range(t)]
    if spec.sampling == "centred":
        phase = (clip + 0.5) / num_clips
        return [min(n - 1, int((i + phase) * n / t)) for i in range(t)]
    if spec.sampling == "segments":
        edges = np.linspace(0, n, t + 1)
        lows = np.floor(edges[:-1]).astype(int)
        highs = np.maximum(lows + 1, np.floor(edges[1:]).astype(int))
        return [int(rng.integers(lo, hi)) for lo, hi in zip(lows, highs, strict=True)]
    raise ValueError(f"unknown sampling policy {spec.sampling!r}")


def _short_indices(n: int, spec: ClipSpec) -> list[int]:
    t = spec.frames
    if spec.short == "pad":
        return list(range(n)) + [n - 1] * (t - n)
    if spec.short == "loop":
        return [i % n for i in range(t)]
    raise ShortVideoError(
        f"the video has {n} frames but a clip needs {t}; "
        "use --short pad or --short loop to keep short videos"
    )
