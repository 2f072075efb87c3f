"""Temporal compression (the paper's taxonomy): synthetic videos of ``syn_frames`` <= T frames.

Real clips (T frames) and synthetic videos (K frames) are cut into the same S segments, in
order: the real ones into ``segments`` (a count: uniform, sizes differing by at most one,
longer segments first; or explicit sizes summing to T), the synthetic ones uniformly into S
(each at least one frame). Segment s of a synthetic video stands for segment s of every real
clip, and nothing else:

* matching and evaluation see a synthetic video expanded to T frames by **holding** each
  synthetic frame over its share of its real segment (real frame u of a segment of R frames
  shows synthetic frame floor(u * K_s / R) of the matching segment of K_s frames), so DM's
  embeddings, MTT's student and every evaluation network take real-length clips and each
  synthetic segment is compared with its real segment only;
* a real-initialised synthetic video takes, for each synthetic frame, the real frame at the
  centre of the span it will hold.

Only the K stored frames count as bytes; the expansion is an index, rebuilt from the layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field, field_validator

from s2d_ray.config import StrictConfig


class TemporalConfig(StrictConfig):
    """Shared by every method that learns videos: ``--syn-frames K --segments S``."""

    syn_frames: int | None = Field(
        default=None, ge=1, description="frames stored per synthetic video; None: the real T"
    )
    segments: int | list[int] = Field(
        default=1, description="segment count (uniform) or the real segments' sizes"
    )

    @field_validator("segments")
    @classmethod
    def _positive(cls, value):
        sizes = [value] if isinstance(value, int) else value
        if not sizes or any(n < 1 for n in sizes):
            raise ValueError(f"segments must be a count >= 1 or sizes >= 1, got {value!r}")
        return value


def split_evenly(total: int, parts: int) -> list[int]:
    """``parts`` sizes summing to ``total``, differing by at most one, longer ones first."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def segment_sizes(
    frames: int, syn_frames: int, segments: int | Sequence[int]
) -> tuple[list[int], list[int]]:
    """(real sizes, synthetic sizes) of the S segments; ``ValueError`` naming the fix."""
    if isinstance(segments, int):
        real = split_evenly(frames, segments) if segments <= frames else []
        count = segments
    else:
        real, count = list(segments), len(segments)
    if sum(real) != frames or any(n < 1 for n in real):
        raise ValueError(
            f"--segments {segments} cannot cut real clips of {frames} frames into segments "
            f"of at least one frame (explicit sizes must sum to {frames})"
        )
    if not 1 <= syn_frames <= frames:
        raise ValueError(f"--syn-frames must be in [1, {frames}] (the real T), got {syn_frames}")
    if syn_frames < count:
        raise ValueError(
            f"--syn-frames {syn_frames} is fewer than the {count} segments: every segment needs "
            "at least one synthetic frame; raise --syn-frames or lower --segments"
        )
    return real, split_evenly(syn_frames, count)


def expansion_index(frames: int, syn_frames: int, segments: int | Sequence[int]) -> torch.Tensor:
    """For each of the ``frames`` real positions, the synthetic frame shown there (hold)."""
    real, syn = segment_sizes(frames, syn_frames, segments)
    index, offset = [], 0
    for r, k in zip(real, syn, strict=True):
        index += [offset + u * k // r for u in range(r)]
        offset += k
    return torch.tensor(index, dtype=torch.int64)


def initial_frames(frames: int, syn_frames: int, segments: int | Sequence[int]) -> torch.Tensor:
    """For each synthetic frame, the real frame at the centre of the span it holds."""
    real, syn = segment_sizes(frames, syn_frames, segments)
    index, offset = [], 0
    for r, k in zip(real, syn, strict=True):
        index += [offset + ((2 * j + 1) * r) // (2 * k) for j in range(k)]
        offset += r
    return torch.tensor(index, dtype=torch.int64)


def temporal_layout(frames: int, config: TemporalConfig) -> dict | None:
    """The set's temporal layout for real clips of ``frames``, or None without compression."""
    syn_frames = config.syn_frames or frames
    segments = config.segments
    real, _ = segment_sizes(frames, syn_frames, segments)
    if syn_frames == frames:
        return None  # every segment holds its own frames: expansion is the identity
    return {"frames": frames, "syn_frames": syn_frames, "segments": real}
