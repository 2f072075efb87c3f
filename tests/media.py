"""Media written by tests: frame folders and videos whose pixels encode the frame number."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image


def frame_value(i: int) -> int:
    """Grey level that encodes frame number i, robust to JPEG/H.264 loss (steps of 12)."""
    return 10 + 12 * (i % 20)


def write_frame_folder(
    folder: Path, n: int, size=(160, 120), start: int = 1, pattern: str = "frame{:06d}.jpg"
) -> Path:
    """n JPEG frames whose grey level encodes their number; 1-indexed like the reference layout."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = np.full((size[1], size[0], 3), frame_value(i), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / pattern.format(i + start), quality=95)
    return folder


def write_video(path: Path, n: int, size=(160, 120), codec: str = "mpeg4", fps: int = 25) -> Path:
    """A video of n frames whose grey level encodes the frame number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(n):
            pixels = np.full((size[1], size[0], 3), frame_value(i), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decoded_frame_numbers(clip: np.ndarray) -> list[int]:
    """Invert frame_value on each frame of a decoded clip (T, H, W, 3)."""
    return [round((float(f.mean()) - 10) / 12) for f in clip]
