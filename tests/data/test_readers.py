"""Decoding: temporal order, geometry, PyAV, and the real sample clips in ../shared/data."""

import pickle
from pathlib import Path

import numpy as np
import pytest
from media import decoded_frame_numbers, write_frame_folder, write_video
from PIL import Image

from s2d_ray.data.index import VideoRecord
from s2d_ray.data.readers.media import (
    BadVideoError,
    FrameFolder,
    VideoFile,
    open_media,
    read_clips,
    resize_and_crop,
)
from s2d_ray.data.spec import ClipSpec

SPEC8 = ClipSpec(frames=8, size=64, sampling="centred")


def test_frame_folder_reads_in_frame_number_order_not_listing_order(tmp_path):
    # frame1 .. frame12 without zero padding: directory/lexicographic order puts 10 before 2.
    folder = write_frame_folder(tmp_path / "v", 12, pattern="img_{}.jpg", start=1)
    media = FrameFolder(folder)
    assert [p.name for p in media.frames][:3] == ["img_1.jpg", "img_2.jpg", "img_3.jpg"]
    clip = media.read(list(range(12)), 32)
    assert decoded_frame_numbers(clip) == list(range(12))


def test_frame_count_comes_from_the_files_not_the_folder_name(tmp_path):
    folder = write_frame_folder(tmp_path / "v_Punch_g01_c01_n300", 7)
    assert FrameFolder(folder).num_frames == 7


@pytest.mark.parametrize(("w", "h"), [(160, 120), (120, 160), (476, 240), (113, 113), (300, 97)])
def test_resize_shorter_side_then_centre_crop(w, h):
    # A left/right split image: the centre crop must keep the boundary in the middle.
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    pixels[:, w // 2 :] = 255
    out = resize_and_crop(Image.fromarray(pixels), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[:, :28].mean() < 20 and out[:, 36:].mean() > 235


def test_all_frames_of_a_clip_share_one_crop(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(8):
        pixels = np.zeros((120, 200, 3), dtype=np.uint8)
        pixels[:, 100:] = 200  # same scene every frame
        Image.fromarray(pixels).save(folder / f"frame{i + 1:06d}.png")
    clip = FrameFolder(folder).read(list(range(8)), 48)
    assert all(np.array_equal(clip[0], f) for f in clip)


@pytest.mark.parametrize(("name", "codec"), [("v.avi", "mpeg4"), ("v.mp4", "libx264")])
def test_video_file_counts_and_decodes_only_needed_frames_in_order(tmp_path, name, codec):
    path = write_video(tmp_path / name, 30, codec=codec)
    media = VideoFile(path)
    assert media.num_frames == 30
    clip = media.read([2, 5, 5, 17], 64)
    assert clip.shape == (4, 64, 64, 3)
    assert decoded_frame_numbers(clip) == [2, 5, 5, 17]


def test_corrupt_and_empty_jpegs_name_the_file(tmp_path):
    folder = write_frame_folder(tmp_path / "v", 4)
    (folder / "frame000002.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    media = FrameFolder(folder)
    with pytest.raises(BadVideoError, match=r"frame000002\.jpg.*corrupt"):
        media.read([1], 32)
    assert media.read([0, 3], 32).shape == (2, 32, 32, 3)  # only what the clip needs is decoded
    (folder / "frame000003.jpg").write_bytes(b"")
    with pytest.raises(BadVideoError, match=r"frame000003\.jpg.*0-byte"):
        FrameFolder(folder)


def test_undecodable_video_names_the_file(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(BadVideoError, match=r"broken\.mp4"):
        VideoFile(path)


def test_truncated_video_gives_a_clip_from_the_frames_that_remain(tmp_path):
    path = write_video(tmp_path / "t.avi", 40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    media = open_media(VideoRecord("t", str(path), "video", 0, "c", "train"))
    assert 0 < media.num_frames < 40
    [(clip, idx)] = read_clips(media, SPEC8, num_clips=1, rng=np.random.default_rng(0))
    assert clip.shape == (8, 64, 64, 3) and idx[-1] < media.num_frames
    assert decoded_frame_numbers(clip) == [i % 20 for i in idx]


def test_bad_video_error_survives_pickling_for_ray_tasks():
    error = pickle.loads(pickle.dumps(BadVideoError("/data/v.mp4", "corrupt")))
    assert isinstance(error, BadVideoError) and error.path == "/data/v.mp4"
    assert str(error) == "/data/v.mp4: corrupt"


def test_embedded_media_renders_at_requested_size():
    record = VideoRecord("e", "embedded://3/1234", "embedded", 3, "x", "train")
    media = open_media(record)
    [(clip, idx)] = read_clips(media, SPEC8, num_clips=1, rng=np.random.default_rng(0))
    assert clip.shape == (8, 64, 64, 3) and len(idx) == 8


def test_real_dark_clips_decode_through_pyav(shared_data: Path):
    """The ARID clips: dark, 320x240 and 476x240, 36-151 frames, H.264 MP4; plus an MKV."""
    spec = ClipSpec(frames=16, size=112, sampling="stride")
    paths = sorted((shared_data / "arid11").glob("*/*.mp4"))
    assert len(paths) == 24
    for path in [
        *paths[:3],
        shared_data / "arid11/Sit/Sit_25_14.mp4",
        shared_data / "arid11/Turn/Turn_1_1.mp4",
        shared_data / "misc_samples/decord_flipping_a_pancake.mkv",
    ]:
        media = VideoFile(path)
        [(clip, idx)] = read_clips(media, spec, num_clips=1, rng=np.random.default_rng(0))
        assert clip.shape == (16, 112, 112, 3)
        assert idx == sorted(idx) and idx[-1] < media.num_frames
    assert VideoFile(shared_data / "arid11/Sit/Sit_25_14.mp4").num_frames == 151
    assert VideoFile(shared_data / "arid11/Turn/Turn_1_1.mp4").num_frames == 36


def test_several_clips_decode_each_frame_once_in_their_own_order(tmp_path):
    media = VideoFile(write_video(tmp_path / "v.avi", 30))
    reads = []
    original = media.read
    media.read = lambda idx, size: reads.append(list(idx)) or original(idx, size)
    clips = read_clips(media, SPEC8, num_clips=3, rng=np.random.default_rng(0))
    assert len(reads) == 1 and reads[0] == sorted(set(reads[0]))
    for clip, idx in clips:
        assert decoded_frame_numbers(clip) == [i % 20 for i in idx]
    assert len({tuple(idx) for _, idx in clips}) == 3  # three phases, three different clips
