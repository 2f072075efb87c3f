"""The MLflow previews: a GIF per class that shows the synthetic frames as they are."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from s2d_ray.normalization import IMAGENET_MEAN, IMAGENET_STD
from s2d_ray.tracking.previews import class_gifs


def normalised(frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float (N, T, 3, H, W) in the ImageNet-normalised space."""
    x = torch.from_numpy(frames).float().movedim(-1, -3) / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        3, 1, 1
    )


def test_a_gif_per_class_shows_its_first_video_frame_by_frame(tmp_path):
    """200 colours over 5 frames: one palette holds them nearly exactly (mean error 0.1 of
    255 here; a median-cut palette per upscaled, dithered frame was 22-25)."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(200, 3), dtype=np.uint8)
    frames = colours[rng.integers(0, 200, size=(6, 5, 12, 16))]  # (N, T, H, W, 3)
    labels = torch.tensor([2, 0, 1, 2, 0, 1])
    paths = class_gifs(normalised(frames), labels, tmp_path, names=["a", "b", "c"], scale=2)
    assert [p.name for p in paths] == ["0000-a.gif", "0001-b.gif", "0002-c.gif"]
    for path, first in zip(paths, frames[[1, 2, 0]], strict=True):  # each class's first video
        with Image.open(path) as gif:
            assert gif.n_frames == 5 and gif.size == (32, 24)
            for t in range(5):
                gif.seek(t)
                shown = np.asarray(gif.convert("RGB")).astype(int)
                assert np.array_equal(shown[::2, ::2], shown[1::2, 1::2])  # pixels, not blur
                assert np.abs(shown[::2, ::2] - first[t]).mean() < 1
