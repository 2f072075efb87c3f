"""Readers turn one VideoRecord into a clip of uint8 frames (T, S, S, 3)."""

from s2d_ray.data.readers.media import BadVideoError, open_media, read_clips, resize_and_crop

__all__ = ["BadVideoError", "open_media", "read_clips", "resize_and_crop"]
