"""What a clip is: frame count, frame size, how frames are picked, what to do with short videos."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from s2d_ray.config import StrictConfig

SamplingPolicy = Literal["stride", "centred", "segments"]
ShortPolicy = Literal["pad", "loop", "reject"]


class ClipSpec(StrictConfig):
    """One clip = ``frames`` frames of ``size``×``size`` RGB, picked by ``sampling``.

    ``stride`` is the reference rule for 16-frame sets (SPEC §1): step ``stride`` when the
    video is long enough, else ``n // frames``. ``centred`` spreads frames evenly with a
    centred phase (the 8-frame sets). ``segments`` takes one random frame per equal segment.
    """

    frames: int = Field(ge=1, le=512)
    size: int = Field(ge=8, le=1024)
    sampling: SamplingPolicy = "stride"
    stride: int = Field(default=4, ge=1)
    short: ShortPolicy = "pad"

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        """(T, H, W, 3): the layout clips are stored and read in."""
        return (self.frames, self.size, self.size, 3)

    @property
    def nbytes(self) -> int:
        return self.frames * self.size * self.size * 3
