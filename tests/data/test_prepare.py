"""Preparation: shard round trip, manifest, resume, bad input, --strict, determinism, Ray."""

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from media import decoded_frame_numbers, write_frame_folder, write_video

from s2d_ray.data import BadVideoError, PrepareConfig, prepare
from s2d_ray.data.clips import ClipDataset
from s2d_ray.data.prepare import build_shard, plan_shards, run_local
from s2d_ray.data.readers.media import open_media
from s2d_ray.data.registry import DiscoverOptions, discover
from s2d_ray.data.sampling import clip_indices
from s2d_ray.data.stream import ClipShards
from s2d_ray.seeding import numpy_rng


def video_tree(root: Path, bad: bool = False) -> Path:
    """<root>/<class>/<video>: 2 classes x 4 good videos (+ one of each kind of bad input)."""
    for cls, n in (("jump", 20), ("wave", 34)):
        for i in range(4):
            write_video(root / cls / f"{cls}{i}.avi", n + i, size=(96, 72))
    if bad:
        write_frame_folder(root / "jump" / "corrupt", 10, size=(40, 30))
        # frame 5 lies inside every 8-frame clip of a 10-frame video
        (root / "jump" / "corrupt" / "frame000005.jpg").write_bytes(b"\xff\xd8garbage")
        write_frame_folder(root / "jump" / "empty", 10, size=(40, 30))
        (root / "jump" / "empty" / "frame000009.jpg").write_bytes(b"")
        (root / "wave" / "undecodable.mp4").write_bytes(b"not a video at all" * 100)
        write_video(root / "wave" / "short.avi", 3, size=(96, 72))
    return root


def config(root, out, **kw):
    base = dict(
        dataset="video-folder",
        root=str(root),
        out=str(out),
        frames=8,
        size=32,
        sampling="stride",
        stride=2,
        test_fraction=0.25,
        videos_per_shard=2,
        val_fraction=0.0,  # these tests check the shard format; tests/data/test_validation.py
        val_min_per_class=0,  # checks the validation split
    )
    return PrepareConfig(**(base | kw))


def shard_digests(out: Path) -> dict[str, str]:
    return {
        s["path"]: s["sha256"] for s in json.loads((out / "dataset.json").read_text())["shards"]
    }


def test_round_trip_is_byte_exact_and_manifest_counts(tmp_path):
    cfg = config(video_tree(tmp_path / "raw"), tmp_path / "out", clips_per_video=2, test_clips=3)
    summary = prepare(cfg, progress=False)
    m = summary.manifest
    assert m["classes"] == ["jump", "wave"] and m["clip_shape"] == [8, 32, 32, 3]
    assert m["counts"]["train"] == {
        "videos": 6,
        "clips": 12,
        "clips_per_class": {"jump": 6, "wave": 6},
    }
    assert m["counts"]["test"]["clips"] == 6 and m["skipped"] == 0
    # Every stored clip equals a direct decode with the same per-video seed stream.
    index = discover("video-folder", DiscoverOptions(root=tmp_path / "raw", test_fraction=0.25))
    records = {r.video_id: r for r in index.records}
    spec = cfg.clip_spec()
    shards = ClipShards(str(tmp_path / "out"))
    for split in ("train", "test"):
        for path in shards.files(split):
            table = pq.read_table(path)
            assert table.schema.field("frames").type == "binary"
            assert json.loads(table.schema.metadata[b"s2d.clip_shape"]) == [8, 32, 32, 3]
            for row in table.to_pylist():
                r = records[row["video_id"]]
                num_clips = 2 if split == "train" else 3
                rng = numpy_rng(0, "clips", r.split, r.video_id)
                media = open_media(r)
                picks = [
                    clip_indices(media.num_frames, spec, clip=k, num_clips=num_clips, rng=rng)
                    for k in range(num_clips)
                ]
                expected = media.read(picks[row["clip"]], spec.size)  # decoded on its own
                assert row["frames"] == expected.tobytes()
                assert row["frame_indices"] == picks[row["clip"]]
                assert row["label"] == r.label and row["class_name"] == r.class_name
                clip = np.frombuffer(row["frames"], np.uint8).reshape(8, 32, 32, 3)
                assert decoded_frame_numbers(clip) == [i % 20 for i in row["frame_indices"]]
    assert shards.verify() == []


def test_shards_are_partitioned_by_split_and_class(tmp_path):
    prepare(config(video_tree(tmp_path / "raw"), tmp_path / "out"), progress=False)
    paths = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.parquet")
    )
    assert paths == [
        "index/test.parquet",
        "index/train.parquet",
        "test/0000/part-00000.parquet",
        "test/0001/part-00000.parquet",
        "train/0000/part-00000.parquet",
        "train/0000/part-00001.parquet",
        "train/0001/part-00000.parquet",
        "train/0001/part-00001.parquet",
    ]


def test_bad_inputs_are_listed_and_lose_nothing(tmp_path):
    root = video_tree(tmp_path / "raw", bad=True)
    (root / "jump" / "nothing_here").mkdir()
    summary = prepare(config(root, tmp_path / "out", short="reject"), progress=False)
    with open(tmp_path / "out" / "skipped.csv") as handle:
        rows = {r["video_id"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"corrupt", "empty", "undecodable", "short", "nothing_here"}
    assert "corrupt or unreadable frame" in rows["corrupt"]["reason"]
    assert rows["corrupt"]["path"].endswith("frame000005.jpg")
    assert rows["empty"]["path"].endswith("frame000009.jpg")
    assert "0-byte" in rows["empty"]["reason"]
    assert "cannot open video" in rows["undecodable"]["reason"]
    assert "3 frames but a clip needs 8" in rows["short"]["reason"]
    assert "no frame images" in rows["nothing_here"]["reason"]
    m = summary.manifest
    assert m["skipped"] == 5
    assert m["counts"]["train"]["videos"] + m["counts"]["test"]["videos"] == 8  # all good kept


def test_short_videos_are_padded_by_default(tmp_path):
    root = video_tree(tmp_path / "raw", bad=True)
    summary = prepare(config(root, tmp_path / "out"), progress=False)
    assert "short" not in {p.video_id for p in summary.problems}


def test_strict_stops_at_the_first_bad_video_naming_it(tmp_path):
    root = video_tree(tmp_path / "raw", bad=True)
    with pytest.raises(BadVideoError, match=r"frame00000[59]\.jpg.*--strict"):
        prepare(config(root, tmp_path / "out", strict=True), progress=False)


def test_resume_after_an_interrupted_run_keeps_complete_shards(tmp_path):
    root = video_tree(tmp_path / "raw")
    clean = prepare(config(root, tmp_path / "clean"), progress=False)

    def crashing_runner(tasks):
        for i, task in enumerate(tasks):
            if i == 3:
                # a half-written shard left behind by the crash: no sidecar, so it is redone
                out = Path(task.out) / task.relpath
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(b"PAR1 torn")
                raise KeyboardInterrupt
            yield build_shard(task)

    with pytest.raises(KeyboardInterrupt):
        prepare(config(root, tmp_path / "out"), runner=crashing_runner, progress=False)
    built = []

    def counting_runner(tasks):
        built.extend(t.relpath for t in tasks)
        yield from run_local(tasks)

    resumed = prepare(config(root, tmp_path / "out"), runner=counting_runner, progress=False)
    assert resumed.reused == 3 and len(built) == 3
    assert shard_digests(tmp_path / "out") == shard_digests(tmp_path / "clean")
    assert resumed.manifest["fingerprint"] == clean.manifest["fingerprint"]
    again = prepare(config(root, tmp_path / "out"), runner=counting_runner, progress=False)
    assert again.built == 0 and again.reused == 6  # idempotent


def test_a_different_config_never_mixes_into_an_existing_output(tmp_path):
    root = video_tree(tmp_path / "raw")
    prepare(config(root, tmp_path / "out"), progress=False)
    with pytest.raises(FileExistsError, match="another configuration"):
        prepare(config(root, tmp_path / "out", size=48), progress=False)


def test_same_seed_same_shards_other_seed_other_clips(tmp_path):
    root = video_tree(tmp_path / "raw")
    a = prepare(config(root, tmp_path / "a", seed=3), progress=False)
    b = prepare(config(root, tmp_path / "b", seed=3), progress=False)
    c = prepare(config(root, tmp_path / "c", seed=4), progress=False)
    assert shard_digests(tmp_path / "a") == shard_digests(tmp_path / "b")
    assert a.manifest["fingerprint"] == b.manifest["fingerprint"] != c.manifest["fingerprint"]


def test_config_validation_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="needs --root"):
        PrepareConfig(dataset="ucf101", out=str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset"):
        PrepareConfig(dataset="nope", out=str(tmp_path))
    with pytest.raises(ValueError, match="clips_per_video"):
        PrepareConfig(dataset="embedded", out=str(tmp_path), clips_per_video=0)


def test_embedded_dataset_prepares_to_the_documented_counts(tmp_path):
    summary = prepare(PrepareConfig(dataset="embedded", out=str(tmp_path / "e")), progress=False)
    counts = summary.manifest["counts"]
    # 4 train clips per video (the temporal jitter expert epochs draw from), 3 val and test
    # clips; val holds 10 % of each class's 40 training videos
    assert counts["train"]["clips"] == 1440 and counts["test"]["clips"] == 300
    assert counts["train"]["videos"] == 360 and counts["val"]["videos"] == 40
    assert counts["val"]["clips_per_class"] == {c: 12 for c in summary.manifest["classes"]}
    assert summary.manifest["clips_per_video"] == {"train": 4, "val": 3, "test": 3}
    assert summary.manifest["clip_shape"] == [8, 64, 64, 3]
    train = ClipDataset(str(tmp_path / "e"), "train")
    assert len(train) == 1440 and train.labels.bincount().tolist() == [144] * 10
    assert train.num_videos == 360 and all(len(rows) == 4 for rows in train.video_rows)
    first = train.video_rows[0]  # the 4 clips of a video are 4 distinct phases of it
    assert len({train.clip_array(int(r)).tobytes() for r in first}) == 4


def test_real_clips_prepare_through_video_folder(tmp_path, shared_data):
    cfg = PrepareConfig(
        dataset="video-folder",
        root=str(shared_data / "arid11"),
        out=str(tmp_path / "arid"),
        frames=16,
        size=112,
        test_fraction=0.5,
        val_fraction=0.0,
        val_min_per_class=0,
    )
    summary = prepare(cfg, progress=False)
    m = summary.manifest
    assert m["skipped"] == 0 and m["counts"]["train"]["clips"] == 4 * 12
    assert m["counts"]["test"]["clips"] == 36
    clips = ClipDataset(str(tmp_path / "arid"), "train")
    assert clips[0][0].shape == (16, 112, 112, 3) and clips.num_videos == 12
    assert float(clips[0][0].float().mean()) < 60  # the ARID clips are dark


@pytest.mark.slow
def test_ray_tasks_build_the_same_shards_as_local(tmp_path, ray_local):
    from s2d_ray.data.prepare import run_ray

    root = video_tree(tmp_path / "raw")
    prepare(config(root, tmp_path / "local"), progress=False)
    prepare(config(root, tmp_path / "ray"), runner=run_ray, progress=False)
    assert shard_digests(tmp_path / "local") == shard_digests(tmp_path / "ray")


def test_plan_is_deterministic_and_sorted(tmp_path):
    root = video_tree(tmp_path / "raw")
    cfg = config(root, tmp_path / "out")
    index = discover("video-folder", DiscoverOptions(root=root, test_fraction=0.25))
    plan = plan_shards(index, cfg)
    assert [t.relpath for t in plan] == sorted(t.relpath for t in plan)
    index.records = index.records[::-1]  # discovery order must not matter
    assert plan == plan_shards(index, cfg)


def test_resume_never_keeps_a_shard_whose_videos_changed(tmp_path):
    root = video_tree(tmp_path / "raw")
    prepare(config(root, tmp_path / "out"), progress=False)
    write_video(root / "jump" / "jump00.avi", 25, size=(96, 72))  # sorts first: shifts shards
    resumed = prepare(config(root, tmp_path / "out"), progress=False)
    clean = prepare(config(root, tmp_path / "clean"), progress=False)
    assert resumed.built > 0
    assert shard_digests(tmp_path / "out") == shard_digests(tmp_path / "clean")
    assert resumed.manifest["counts"] == clean.manifest["counts"]


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = PrepareConfig(dataset="video-folder", root="raw", out="out")
    assert cfg.root == str(tmp_path / "raw") and cfg.out == str(tmp_path / "out")
    assert PrepareConfig(dataset="embedded", out="s3://bucket/shards").out == "s3://bucket/shards"
