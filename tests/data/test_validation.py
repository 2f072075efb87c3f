"""The validation split: carved from train, by video and by group, stratified, seeded, recorded."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from s2d_ray.data import ClipShards, PrepareConfig, prepare
from s2d_ray.data.index import VideoRecord
from s2d_ray.data.validation import carve_validation, ucf_group


def ucf_records() -> list[VideoRecord]:
    """Two UCF-like classes: train groups g08-g13 of 3-5 clips, test groups g01-g07."""
    records = []
    for label, name in enumerate(("Archery", "Bowling")):
        for group in range(1, 14):
            split = "test" if group <= 7 else "train"
            for clip in range(1, 3 + group % 3 + 1):
                vid = f"v_{name}_g{group:02d}_c{clip:02d}"
                records.append(VideoRecord(vid, f"/x/{vid}", "frames", label, name, split))  # type: ignore[arg-type]
    return records


def carve(records, **kw):
    options = dict(fraction=0.2, min_per_class=2, seed=0, group_of=ucf_group, grouped_by="g")
    return carve_validation(records, **(options | kw))


def test_whole_groups_move_from_train_to_val_per_class():
    records = ucf_records()
    out, plan = carve(records)
    split_of = {r.video_id: r.split for r in out}
    assert all(split_of[r.video_id] == "test" for r in records if r.split == "test")
    for name in ("Archery", "Bowling"):
        val = [r for r in out if r.class_name == name and r.split == "val"]
        train = [r for r in out if r.class_name == name and r.split == "train"]
        before = [r for r in records if r.class_name == name and r.split == "train"]
        assert len(val) + len(train) == len(before)
        assert len(val) >= max(2, round(0.2 * len(before))) and train  # stratified, both kept
        val_groups = {ucf_group(r.video_id) for r in val}
        assert val_groups.isdisjoint(ucf_group(r.video_id) for r in train)  # by group
    assert plan.videos == sum(r.split == "val" for r in out)
    assert plan.groups == len(
        {(r.class_name, ucf_group(r.video_id)) for r in out if r.split == "val"}
    )
    again, _ = carve(records)
    assert again == out  # seeded
    other, _ = carve(records, seed=1)
    assert {r.video_id for r in other if r.split == "val"} != {
        r.video_id for r in out if r.split == "val"
    }


def test_a_class_keeps_a_training_group_and_fraction_zero_carves_nothing():
    one_group = [
        VideoRecord(f"v_A_g08_c0{i}", "/x", "frames", 0, "A", "train")  # type: ignore[arg-type]
        for i in range(1, 5)
    ]
    out, plan = carve(one_group + ucf_records())
    assert all(r.split == "train" for r in out if r.class_name == "A")
    assert plan.classes_without_val == ["A"]
    out, plan = carve(ucf_records(), fraction=0.0)
    assert plan.videos == 0 and not any(r.split == "val" for r in out)


def test_a_class_split_does_not_depend_on_the_other_classes():
    records = ucf_records()
    alone, _ = carve([r for r in records if r.class_name == "Bowling"])
    both, _ = carve(records)
    assert [r for r in both if r.class_name == "Bowling"] == alone


def test_ucf_groups_are_read_from_the_video_id():
    assert ucf_group("v_ApplyEyeMakeup_g08_c01") == "g08"
    assert ucf_group("v_Biking_g25_c07") == "g25"
    assert ucf_group("some_other_video") == "some_other_video"


def test_prepared_shards_hold_a_disjoint_recorded_val_split(embedded_small):
    shards = ClipShards(embedded_small)
    manifest = shards.manifest
    assert manifest["validation"]["fraction"] == 0.1
    assert manifest["validation"]["min_per_class"] == 2
    assert manifest["validation"]["grouped_by"] == "video"
    assert manifest["counts"]["val"]["clips_per_class"] == {c: 12 for c in shards.classes}
    videos = {}
    for split in ("train", "val", "test"):
        ids = set()
        for path in shards.files(split):
            ids |= set(pq.read_table(path, columns=["video_id"]).column(0).to_pylist())
        videos[split] = ids
    assert len(videos["val"]) == 40  # 4 per class
    assert videos["val"].isdisjoint(videos["train"]) and videos["val"].isdisjoint(videos["test"])
    assert all("_train_" in v for v in videos["val"])  # carved from training videos


def test_shards_without_a_val_split_name_the_re_run(tmp_path):
    out = tmp_path / "old"
    prepare(
        PrepareConfig(dataset="embedded", out=str(out), max_videos_per_class=2, val_fraction=0.0),
        progress=False,
    )
    manifest = json.loads((out / "dataset.json").read_text())
    del manifest["validation"]  # as prepared before validation splits existed
    (out / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="prepare the dataset again.*s2d prepare"):
        ClipShards(str(out)).files("val")
    empty = tmp_path / "empty"
    prepare(
        PrepareConfig(dataset="embedded", out=str(empty), max_videos_per_class=2, val_fraction=0),
        progress=False,
    )
    with pytest.raises(ValueError, match="--val-fraction"):
        ClipShards(str(empty)).files("val")
