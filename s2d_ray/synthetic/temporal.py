"""Temporal compression (the paper's taxonomy): synthetic videos of ``syn_frames`` <= T frames.

Real clips (T frames) and synthetic videos (K frames) are cut into the same S segments, in
order: the real ones into ``segments`` (a count: uniform, sizes differing by at most one,
longer segments first; or explicit sizes summing to T), the synthetic ones uniformly into S
(each at least one frame). Segment s of a synthetic video stands for segment s of every real
clip, and nothing else:

* matching and evaluation see a synthetic video expanded to T frames by the
  ``interpolation`` rule: ``hold`` (the default) shows each synthetic frame over its share of
  its real segment (real frame u of a segment of R frames shows synthetic frame
  floor(u * K_s / R) of the matching segment of K_s frames); ``linear`` blends the two
  synthetic frames around position (u + 1/2) * K_s / R - 1/2 of the segment, clamped to it.
  So DM's embeddings, MTT's student and every evaluation network take real-length clips;
* DM and S2D-DM match **pairwise** (``segment_bounds``): real segment k against synthetic
  segment k, expanded to its real length, through a network taking clips of that length,
  with the losses summed over segments. One segment is whole-clip matching. Trajectory
  matching and feature regression match whole clips: their networks (the experts', the
  pool's) take whole clips;
* a real-initialised synthetic video takes, for each synthetic frame, the real frame at the
  centre of the span it will hold.

Only the K stored frames count as bytes; the expansion is an index, rebuilt from the layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

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
    interpolation: Literal["hold", "linear"] = Field(
        default="hold", description="how a synthetic segment is expanded to its real length"
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


def expansion(
    frames: int, syn_frames: int, segments: int | Sequence[int], interpolation: str = "hold"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first, second, weight) per real position: the expanded frame is
    (1 - weight) * synthetic[first] + weight * synthetic[second]. ``hold``: weight 0."""
    if interpolation == "hold":
        index = expansion_index(frames, syn_frames, segments)
        return index, index, torch.zeros(frames)
    if interpolation != "linear":
        raise ValueError(f"interpolation must be 'hold' or 'linear', got {interpolation!r}")
    real, syn = segment_sizes(frames, syn_frames, segments)
    first, second, weight, offset = [], [], [], 0
    for r, k in zip(real, syn, strict=True):
        for u in range(r):
            position = min(max((u + 0.5) * k / r - 0.5, 0.0), k - 1.0)
            low = int(position)
            first.append(offset + low)
            second.append(offset + min(low + 1, k - 1))
            weight.append(position - low)
        offset += k
    return torch.tensor(first), torch.tensor(second), torch.tensor(weight)


def expand_time(videos: torch.Tensor, layout: dict, buffers: dict[str, torch.Tensor]):
    """Stored (N, K, ...) videos -> (N, T, ...) by the layout's rule (``buffers`` from
    ``expansion``: "time_first", "time_second", "time_weight")."""
    first = videos.index_select(1, buffers["time_first"])
    if layout.get("interpolation", "hold") == "hold":
        return first
    second = videos.index_select(1, buffers["time_second"])
    weight = buffers["time_weight"].view(1, -1, *[1] * (videos.dim() - 2)).to(videos.dtype)
    return first + weight * (second - first)


def segment_bounds(frames: int, segments: int | Sequence[int]) -> list[tuple[int, int]]:
    """(start, end) of each real segment: the spans DM matches pairwise."""
    real, _ = segment_sizes(frames, frames, segments)
    ends = torch.tensor(real).cumsum(0).tolist()
    return list(zip([0, *ends[:-1]], ends, strict=True))


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
    layout = {"frames": frames, "syn_frames": syn_frames, "segments": real}
    if config.interpolation != "hold":
        layout["interpolation"] = config.interpolation
    return layout


def register_expansion(module: torch.nn.Module, layout: dict) -> None:
    """The layout's expansion as non-persistent buffers of ``module`` (they follow .to())."""
    first, second, weight = expansion(
        layout["frames"],
        layout["syn_frames"],
        layout["segments"],
        layout.get("interpolation", "hold"),
    )
    module.register_buffer("time_first", first, persistent=False)
    module.register_buffer("time_second", second, persistent=False)
    module.register_buffer("time_weight", weight, persistent=False)


def expand_module_time(module: torch.nn.Module, videos: torch.Tensor, layout: dict):
    """``expand_time`` with the buffers ``register_expansion`` gave ``module``."""
    buffers = {n: getattr(module, n) for n in ("time_first", "time_second", "time_weight")}
    return expand_time(videos, layout, buffers)
