"""What a dataset holds on disk: one record per video, and the problems found while listing."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

VIDEO_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
Split = Literal["train", "val", "test"]
MediaKind = Literal["frames", "video", "embedded"]


@dataclass(frozen=True)
class VideoRecord:
    """One source video: a frame folder, a video file, or an embedded (generated) video."""

    video_id: str
    source: str
    kind: MediaKind
    label: int
    class_name: str
    split: Split


@dataclass(frozen=True)
class Problem:
    """A video (or split entry) that will not become a clip, and why: one row of skipped.csv."""

    video_id: str
    path: str
    reason: str


@dataclass
class DatasetIndex:
    classes: list[str]
    records: list[VideoRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            out.setdefault(r.split, {}).setdefault(r.class_name, 0)
            out[r.split][r.class_name] += 1
        return out


def is_frame_folder(path: Path) -> bool:
    """A directory holding image files is one video stored as frames."""
    try:
        with os.scandir(path) as entries:
            return any(e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file() for e in entries)
    except OSError:
        return False


class MediaIndex:
    """Finds a video by its id (file stem or frame-folder name) anywhere under a root.

    The tree is walked once, never descending into frame folders (a UCF101 frame tree holds
    millions of JPEGs), so resolving ten thousand ids costs one directory walk.
    """

    def __init__(self, root: Path, max_depth: int = 4) -> None:
        self.root = root
        self._by_id: dict[str, list[tuple[Path, MediaKind]]] = defaultdict(list)
        self._walk(root, max_depth)

    def _walk(self, folder: Path, depth: int) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.is_file() and entry.name.lower().endswith(VIDEO_EXTENSIONS):
                self._by_id[path.stem].append((path, "video"))
            elif entry.is_dir():
                if is_frame_folder(path):
                    self._by_id[entry.name].append((path, "frames"))
                elif depth > 0:
                    self._walk(path, depth - 1)

    def find(self, video_id: str, class_hint: str | None = None) -> tuple[Path, MediaKind]:
        """The one media item for ``video_id``; raises LookupError naming what was found."""
        hits = self._by_id.get(video_id, [])
        if class_hint is not None and len(hits) > 1:
            narrowed = [h for h in hits if class_hint in h[0].parts]
            hits = narrowed or hits
        if len(hits) > 1:
            frames = [h for h in hits if h[1] == "frames"]
            hits = frames if len(frames) == 1 else hits
        if not hits:
            raise LookupError(f"no frame folder or video file named {video_id!r} under {self.root}")
        if len(hits) > 1:
            places = ", ".join(str(p) for p, _ in hits[:3])
            raise LookupError(f"{video_id!r} is ambiguous: {places}")
        return hits[0]

    def items(self) -> list[tuple[str, Path, MediaKind]]:
        return [(vid, p, k) for vid, hits in sorted(self._by_id.items()) for p, k in hits]
