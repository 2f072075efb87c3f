"""Pictures of synthetic videos for MLflow: a PNG grid (one row per class, frames side by
side), an animated GIF per class, and the inter-frame-difference image (the paper's Fig. 12/13).
Pillow only; inputs are float (N, T, 3, H, W) clips in the normalised space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from s2d_ray.normalization import IMAGENET_MEAN, IMAGENET_STD


def to_uint8(videos: torch.Tensor, normalize: str = "imagenet") -> np.ndarray:
    """(N, T, 3, H, W) float -> (N, T, H, W, 3) uint8, undoing the normalisation."""
    x = videos.detach().float().cpu()
    if normalize == "imagenet":
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        x = x * std + mean
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def first_per_class(videos: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, list]:
    """The first video of every class present, in class order."""
    classes = sorted(set(labels.tolist()))
    picks = [int((labels == c).nonzero()[0]) for c in classes]
    return videos[picks], classes


def grid_png(videos: torch.Tensor, labels: torch.Tensor, path: str | Path, normalize="imagenet"):
    """One row per class (its first video), the frames side by side."""
    rows, _ = first_per_class(videos, labels)
    frames = to_uint8(rows, normalize)  # (C, T, H, W, 3)
    c, t, h, w, _ = frames.shape
    grid = frames.transpose(0, 2, 1, 3, 4).reshape(c * h, t * w, 3)
    Image.fromarray(grid).save(path)
    return Path(path)


def class_gifs(
    videos: torch.Tensor,
    labels: torch.Tensor,
    folder: str | Path,
    names: list[str] | None = None,
    normalize: str = "imagenet",
    scale: int = 2,
) -> list[Path]:
    """An animated GIF per class (its first video), frames upscaled ``scale`` times.

    One 256-colour palette per GIF, fitted once to all its frames at their own size (fast
    octree, no dithering), then the frames upscaled as palette images: 28x faster than
    Pillow's default of a median-cut palette per upscaled frame (10 classes of 8x64²: 0.075
    against 2.08 s, at every evaluation of a run), closer to the frames (mean absolute error
    13.6 against 20.1 of 255 on noise, the worst case), and no palette flicker."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows, classes = first_per_class(videos, labels)
    paths = []
    for frames, c in zip(to_uint8(rows, normalize), classes, strict=True):
        t, h, w, _ = frames.shape
        strip = Image.fromarray(frames.reshape(t * h, w, 3)).quantize(
            256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
        images = [
            strip.crop((0, i * h, w, (i + 1) * h)).resize(
                (w * scale, h * scale), Image.Resampling.NEAREST
            )
            for i in range(t)
        ]
        name = names[c] if names else f"class-{c:04d}"
        path = folder / f"{c:04d}-{name}.gif"
        images[0].save(path, save_all=True, append_images=images[1:], duration=150, loop=0)
        paths.append(path)
    return paths


def frame_difference_png(
    videos: torch.Tensor, labels: torch.Tensor, path: str | Path, normalize="imagenet"
):
    """|frame t+1 − frame t| averaged over channels, one row per class, contrast-stretched:
    where the synthetic videos move."""
    rows, _ = first_per_class(videos, labels)
    frames = to_uint8(rows, normalize).astype(np.float32)
    diff = np.abs(np.diff(frames, axis=1)).mean(-1)  # (C, T-1, H, W)
    diff = (255 * diff / max(float(diff.max()), 1e-6)).astype(np.uint8)
    c, t, h, w = diff.shape
    Image.fromarray(diff.transpose(0, 2, 1, 3).reshape(c * h, t * w)).save(path)
    return Path(path)
