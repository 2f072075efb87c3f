"""A clip directory written straight from arrays, for tests that need exact clips and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from s2d_ray.data import shards as sh


def clip_directory(
    folder: Path,
    clips: list[np.ndarray],
    labels: list[int],
    shape: tuple[int, ...],
    classes: int,
    split: str = "test",
    rows_per_group: int = 4,
) -> str:
    """One shard per class of uint8 ``clips`` in row groups of ``rows_per_group``: each clip
    its own video."""
    parts = []
    for label in sorted(set(labels)):
        rows = sh.ClipRows.empty()
        for i, (clip, y) in enumerate(zip(clips, labels, strict=True)):
            if y == label:
                rows.add(clip, y, f"class{y}", f"v{i:04d}", split, 0, list(range(shape[0])))
        parts.append((split, label, rows))
    names = [f"class{c}" for c in range(classes)]
    return sh.write_directory(
        str(folder / "clips"), names, shape, parts, rows_per_group=rows_per_group
    )
