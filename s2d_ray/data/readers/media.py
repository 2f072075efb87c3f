"""Decoding: JPEG/PNG frame folders with PIL, video files with PyAV, embedded videos by rendering.

Every reader first tells how many frames the video has, then decodes only the frames a clip
asks for. Each frame is resized (shorter side to S) and centre-cropped to S×S with one
geometry for the whole clip, so a clip never mixes crops.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from PIL import Image

from s2d_ray.data import embedded
from s2d_ray.data.index import IMAGE_EXTENSIONS, VideoRecord
from s2d_ray.data.sampling import ShortVideoError, clip_indices
from s2d_ray.data.spec import ClipSpec

_FRAME_NUMBER = re.compile(r"(\d+)(?!.*\d)")


class BadVideoError(ValueError):
    """A video that cannot become a clip. ``path`` names the file; ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):  # picklable, so Ray returns it intact from a task (--strict)
        return (type(self), (self.path, self.reason))


class Media(Protocol):
    num_frames: int

    def read(self, indices: list[int], size: int) -> np.ndarray: ...


def _target_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(resized w, resized h, left, top) for shorter side -> size, then a centre crop."""
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    return new_w, new_h, (new_w - size) // 2, (new_h - size) // 2


def resize_and_crop(image: Image.Image, size: int) -> np.ndarray:
    """Shorter side to ``size`` (bilinear), centre crop to size×size, as uint8 (S, S, 3)."""
    new_w, new_h, left, top = _target_geometry(image.width, image.height, size)
    if (image.width, image.height) != (new_w, new_h):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _frame_sort_key(path: Path) -> tuple[int, str]:
    match = _FRAME_NUMBER.search(path.stem)
    return (int(match.group(1)) if match else -1, path.name)


class FrameFolder:
    """A folder of frame images, ordered by the frame number in each name (not listing order)."""

    def __init__(self, folder: Path) -> None:
        try:
            files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        except OSError as exc:
            raise BadVideoError(folder, f"cannot list frame folder ({exc.strerror})") from exc
        self.folder = folder
        self.frames = sorted(files, key=_frame_sort_key)
        self.num_frames = len(self.frames)
        # A 0-byte frame is a hole in the frame numbering: caught here by a cheap stat, where
        # corrupt bytes are caught only when a clip decodes that frame.
        empty = next((p for p in self.frames if p.stat().st_size == 0), None)
        if empty is not None:
            raise BadVideoError(empty, "empty (0-byte) frame file; re-extract this video's frames")

    def read(self, indices: list[int], size: int) -> np.ndarray:
        decoded: dict[int, np.ndarray] = {}
        for i in sorted(set(indices)):
            decoded[i] = self._decode(self.frames[i], size)
        return np.stack([decoded[i] for i in indices])

    @staticmethod
    def _decode(path: Path, size: int) -> np.ndarray:
        try:
            with Image.open(path) as image:
                image.draft("RGB", (size, size))
                return resize_and_crop(image.convert("RGB"), size)
        except (OSError, SyntaxError, ValueError) as exc:
            if path.exists() and path.stat().st_size == 0:
                reason = "empty (0-byte) frame file"
            else:
                reason = f"corrupt or unreadable frame image ({exc})"
            raise BadVideoError(path, f"{reason}; re-extract the frames of this video") from exc


class VideoFile:
    """A video file decoded with PyAV; frames are counted by demuxing (no decoding)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise BadVideoError(path, "the file has no video stream")
                stream = container.streams.video[0]
                self.num_frames = sum(1 for p in container.demux(stream) if p.size)
        except av.FFmpegError as exc:
            raise BadVideoError(path, f"cannot open video ({exc}); re-download the file") from exc

    def read(self, indices: list[int], size: int) -> np.ndarray:
        wanted = set(indices)
        last = max(indices)
        decoded: dict[int, np.ndarray] = {}
        count = 0
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for count, frame in enumerate(container.decode(stream), start=1):
                    i = count - 1
                    if i in wanted:
                        new_w, new_h, left, top = _target_geometry(frame.width, frame.height, size)
                        rgb = frame.reformat(width=new_w, height=new_h, format="rgb24")
                        decoded[i] = rgb.to_ndarray()[top : top + size, left : left + size]
                    if i >= last:
                        break
        except av.FFmpegError as exc:
            raise BadVideoError(self.path, f"decoding failed at frame {count} ({exc})") from exc
        if last not in decoded:
            raise _Shortfall(count)
        return np.stack([decoded[i] for i in indices])


class _Shortfall(Exception):
    """The decoder delivered fewer frames than the container listed (a truncated file)."""

    def __init__(self, decoded: int) -> None:
        super().__init__(decoded)
        self.decoded = decoded


class EmbeddedVideo:
    """A generated video of the embedded dataset; ``source`` is ``embedded://<label>/<seed>``."""

    def __init__(self, source: str) -> None:
        label, seed = source.removeprefix("embedded://").split("/")
        self.label, self.seed = int(label), int(seed)
        self.num_frames = embedded.SOURCE_FRAMES

    def read(self, indices: list[int], size: int) -> np.ndarray:
        return embedded.render_video(self.label, self.seed, size=size)[indices]


def open_media(record: VideoRecord) -> Media:
    if record.kind == "frames":
        return FrameFolder(Path(record.source))
    if record.kind == "video":
        return VideoFile(Path(record.source))
    return EmbeddedVideo(record.source)


def read_clips(
    media: Media, spec: ClipSpec, *, num_clips: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, list[int]]]:
    """All ``num_clips`` clips of one video as (uint8 (T, S, S, 3), source frame indices).

    Every needed frame is decoded once, however many clips share it. A video whose decoder
    stops short of its listed length is re-sampled once within the frames that did decode,
    so truncated files still give valid clips.
    """
    source = getattr(media, "path", None) or getattr(media, "folder", None) or "embedded"
    num_frames = media.num_frames
    for _ in range(2):
        try:
            picks = [
                clip_indices(num_frames, spec, clip=k, num_clips=num_clips, rng=rng)
                for k in range(num_clips)
            ]
        except ShortVideoError as exc:
            raise BadVideoError(source, str(exc)) from exc
        wanted = sorted({i for pick in picks for i in pick})
        try:
            frames = media.read(wanted, spec.size)
        except _Shortfall as short:
            num_frames = short.decoded
            continue
        row = {i: r for r, i in enumerate(wanted)}
        return [(frames[[row[i] for i in pick]], pick) for pick in picks]
    raise BadVideoError(source, f"decoder stopped after {num_frames} frames; the file is truncated")
