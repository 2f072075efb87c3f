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


def grid_png(
    videos: torch.Tensor,
    labels: torch.Tensor,
    path: str | Path,
    normalize="imagenet",
    names: list[str] | None = None,
):
    """One row per class (its first video) named at its left, the frames side by side
    numbered on top."""
    rows, classes = first_per_class(videos, labels)
    frames = to_uint8(rows, normalize)  # (C, T, H, W, 3)
    c, t, h, w, _ = frames.shape
    grid = frames.transpose(0, 2, 1, 3, 4).reshape(c * h, t * w, 3)
    rows_named = [_class_name(k, names) for k in classes]
    labelled = _labelled(Image.fromarray(grid), rows_named, [f"t={i}" for i in range(t)], h, w)
    labelled.save(path)
    return Path(path)


def _class_name(c: int, names: list[str] | None, limit: int = 18) -> str:
    name = names[c] if names and c < len(names) else f"class {c}"
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _labelled(
    grid: Image.Image, row_names: list[str], col_names: list[str], cell_h: int, cell_w: int
) -> Image.Image:
    """The grid with its rows named on the left and its columns on top (black on white)."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(grid)
    text_w = max((measure.textbbox((0, 0), n, font=font)[2] for n in row_names), default=0)
    text_h = max(measure.textbbox((0, 0), n, font=font)[3] for n in [*row_names, *col_names])
    left, top = text_w + 8, text_h + 6
    out = Image.new(grid.mode, (grid.width + left, grid.height + top), "white")
    out.paste(grid, (left, top))
    draw = ImageDraw.Draw(out)
    for i, name in enumerate(row_names):
        y = top + i * cell_h + (cell_h - text_h) // 2
        draw.text((4, y), name, fill="black", font=font)
    for j, name in enumerate(col_names):
        draw.text((left + j * cell_w + 2, 3), name, fill="black", font=font)
    return out


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
    videos: torch.Tensor,
    labels: torch.Tensor,
    path: str | Path,
    normalize="imagenet",
    names: list[str] | None = None,
):
    """|frame t+1 − frame t| averaged over channels, one row per class, contrast-stretched
    (the scale bar says what white is, in 0-255 pixel levels): where the synthetic videos
    move."""
    rows, classes = first_per_class(videos, labels)
    frames = to_uint8(rows, normalize).astype(np.float32)
    diff = np.abs(np.diff(frames, axis=1)).mean(-1)  # (C, T-1, H, W)
    peak = float(diff.max())
    diff = (255 * diff / max(peak, 1e-6)).astype(np.uint8)
    c, t, h, w = diff.shape
    grid = Image.fromarray(diff.transpose(0, 2, 1, 3).reshape(c * h, t * w)).convert("RGB")
    columns = [f"{i}-{i + 1}" for i in range(t)]
    labelled = _labelled(grid, [_class_name(k, names) for k in classes], columns, h, w)
    _scale_bar(labelled, peak).save(path)
    return Path(path)


def _scale_bar(image: Image.Image, peak: float, height: int = 10) -> Image.Image:
    """A black-to-white ramp under the image, its ends named: 0 and the largest difference."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    text = f"black 0 .. white {peak:.1f} (mean |difference| of 255 levels)"
    text_h = ImageDraw.Draw(image).textbbox((0, 0), text, font=font)[3]
    out = Image.new("RGB", (image.width, image.height + height + text_h + 8), "white")
    out.paste(image, (0, 0))
    ramp = np.linspace(0, 255, image.width, dtype=np.float32).astype(np.uint8)
    out.paste(Image.fromarray(np.tile(ramp, (height, 1))).convert("RGB"), (0, image.height + 2))
    ImageDraw.Draw(out).text((2, image.height + height + 4), text, fill="black", font=font)
    return out
