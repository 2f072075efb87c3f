"""Every registered dataset, on fixture trees in its on-disk layouts."""

import json

import pytest
from media import write_frame_folder, write_video

from s2d_ray.data.readers.splits import SplitFileError
from s2d_ray.data.registry import DATASETS, MINIUCF_CLASSES, DiscoverOptions, discover, get_dataset


def opts(root, **kw):
    return DiscoverOptions(root=root, **kw)


def ucf_frames(root, names):
    for name in names:
        write_frame_folder(root / "jpegs_112" / name, 3, size=(32, 24))


def test_registry_covers_the_spec_datasets():
    assert set(DATASETS) == {
        "miniucf",
        "ucf101",
        "hmdb51",
        "kinetics400",
        "ssv2",
        "video-folder",
        "embedded",
    }
    assert len(MINIUCF_CLASSES) == 50 and sorted(MINIUCF_CLASSES) == MINIUCF_CLASSES
    assert get_dataset("miniucf").clip.frames == 16 and get_dataset("ucf101").clip.size == 112
    for name in ("kinetics400", "ssv2"):
        clip = get_dataset(name).clip
        assert (clip.frames, clip.size, clip.sampling) == (8, 64, "centred")
    with pytest.raises(ValueError, match="unknown dataset 'ucf'.*miniucf"):
        get_dataset("ucf")


def test_miniucf_from_reference_csv_keeps_only_its_classes(tmp_path):
    ucf_frames(tmp_path, ["v_Punch_g01_c01", "v_Punch_g08_c01", "v_Biking_g02_c03"])
    (tmp_path / "split.csv").write_text(
        "folder_name,label,split\n"
        "v_Punch_g01_c01,Punch,test\nv_Punch_g08_c01,Punch,train\n"
        "v_Biking_g02_c03,Biking,train\nv_YoYo_g01_c01,YoYo,train\n"
    )
    index = discover("miniucf", opts(tmp_path))
    assert index.classes == MINIUCF_CLASSES
    got = {(r.video_id, r.class_name, r.split, r.label) for r in index.records}
    punch, biking = MINIUCF_CLASSES.index("Punch"), MINIUCF_CLASSES.index("Biking")
    assert got == {
        ("v_Punch_g01_c01", "Punch", "test", punch),
        ("v_Punch_g08_c01", "Punch", "train", punch),
        ("v_Biking_g02_c03", "Biking", "train", biking),
    }
    assert index.problems == []  # YoYo is a UCF101 class outside MiniUCF: not an error
    assert all(r.kind == "frames" for r in index.records)


def test_ucf101_official_lists_and_missing_media(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Biking\n")
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nBiking/v_Biking_g09_c01.avi 2\n"
    )
    (lists / "testlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\nYoYo/v_YoYo_g01_c01.avi\n"
    )
    write_video(tmp_path / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi", 5)
    write_video(tmp_path / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi", 5)
    index = discover("ucf101", opts(tmp_path))
    assert index.classes == ["ApplyEyeMakeup", "Biking"]
    assert sorted((r.video_id, r.split, r.kind) for r in index.records) == [
        ("v_ApplyEyeMakeup_g01_c01", "test", "video"),
        ("v_ApplyEyeMakeup_g08_c01", "train", "video"),
    ]
    reasons = sorted(p.reason for p in index.problems)
    assert "no frame folder or video file named 'v_Biking_g09_c01'" in reasons[1]
    assert "class 'YoYo' is not in the class list" in reasons[0]
    assert "testlist01.txt:2" in reasons[0]


def test_hmdb51_train_is_everything_not_in_test(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 2\n")
    for cls, name in [
        ("brush_hair", "a"),
        ("brush_hair", "b"),
        ("brush_hair", "c"),
        ("cartwheel", "d"),
    ]:
        write_frame_folder(tmp_path / "frames" / cls / name, 2, size=(32, 24))
    index = discover("hmdb51", opts(tmp_path))
    assert index.classes == ["brush_hair", "cartwheel"]
    assert sorted((r.video_id, r.split, r.label) for r in index.records) == [
        ("a", "train", 0),
        ("b", "test", 0),
        ("c", "train", 0),
        ("d", "test", 1),
    ]


def test_kinetics_csv_and_video_files(tmp_path):
    header = "label,youtube_id,time_start,time_end,split\n"
    (tmp_path / "train.csv").write_text(
        header + "abseiling,AAA,10,20,train\nzumba,BBB,0,10,train\n"
    )
    (tmp_path / "validate.csv").write_text(header + "zumba,CCC,5,15,validate\n")
    write_video(tmp_path / "train" / "abseiling" / "AAA_000010_000020.mp4", 5)
    write_video(tmp_path / "train" / "zumba" / "BBB_000000_000010.mp4", 5)
    write_frame_folder(tmp_path / "val" / "zumba" / "CCC_000005_000015", 3, size=(32, 24))
    index = discover("kinetics400", opts(tmp_path))
    assert index.classes == ["abseiling", "zumba"]
    assert sorted((r.video_id, r.split, r.label, r.kind) for r in index.records) == [
        ("AAA_000010_000020", "train", 0, "video"),
        ("BBB_000000_000010", "train", 1, "video"),
        ("CCC_000005_000015", "test", 1, "frames"),
    ]


def test_ssv2_json_templates_map_to_classes(tmp_path):
    labels = {"Pushing something from left to right": "1", "Holding something": "0"}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    train = [{"id": "1", "label": "holding a pen", "template": "Holding [something]"}]
    val = [{"id": "2", "template": "Pushing [something] from left to right"}]
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "validation.json").write_text(json.dumps(val))
    write_video(tmp_path / "videos" / "1.webm", 5, codec="libvpx")
    write_frame_folder(tmp_path / "frames" / "2", 3, size=(32, 24))
    index = discover("ssv2", opts(tmp_path))
    assert index.classes == ["Holding something", "Pushing something from left to right"]
    assert sorted((r.video_id, r.label, r.split, r.kind) for r in index.records) == [
        ("1", 0, "train", "video"),
        ("2", 1, "test", "frames"),
    ]


def test_video_folder_split_is_stratified_deterministic_and_seeded(tmp_path):
    for cls in ("jump", "run"):
        for i in range(5):
            write_frame_folder(tmp_path / cls / f"{cls}{i}", 2, size=(32, 24))
    (tmp_path / "jump" / "notes.txt").write_text("ignored")
    a = discover("video-folder", opts(tmp_path, test_fraction=0.4, seed=1))
    b = discover("video-folder", opts(tmp_path, test_fraction=0.4, seed=1))
    c = discover("video-folder", opts(tmp_path, test_fraction=0.4, seed=2))
    assert a.records == b.records
    assert a.classes == ["jump", "run"]
    for cls in a.classes:
        assert sum(r.split == "test" for r in a.records if r.class_name == cls) == 2
    test_ids = lambda idx: {r.video_id for r in idx.records if r.split == "test"}  # noqa: E731
    assert test_ids(a) != test_ids(c)


def test_video_folder_on_the_real_sample_clips(shared_data):
    index = discover("video-folder", opts(shared_data / "arid11", test_fraction=0.5))
    assert len(index.classes) == 11 and len(index.records) == 24
    assert sum(r.split == "test" for r in index.records) == 12
    assert all(r.kind == "video" for r in index.records)


def test_embedded_needs_no_root_and_has_the_documented_size():
    index = discover("embedded", DiscoverOptions(root=None))
    assert len(index.classes) == 10
    counts = index.counts()
    assert set(counts["train"].values()) == {40} and set(counts["test"].values()) == {10}
    assert index.records == discover("embedded", DiscoverOptions(root=None)).records


@pytest.mark.parametrize(
    ("dataset", "files", "match"),
    [
        ("miniucf", {}, "no split file.*--split-file"),
        ("miniucf", {"s.csv": "folder_name,label,split\nv_a,Punch,val\n"}, r"s\.csv:2.*'train' or"),
        ("ucf101", {"classInd.txt": "1 A\n3 B\n"}, r"classInd\.txt:2.*'2 ClassName'"),
        ("ucf101", {"classInd.txt": "1 A\n"}, r"trainlist01\.txt is missing"),
        ("hmdb51", {}, r"_test_split1\.txt"),
        ("hmdb51", {"x_test_split1.txt": "a.avi 7\n"}, r"x_test_split1\.txt:1"),
        ("kinetics400", {"train.csv": "label,youtube_id,time_start,time_end\n"}, "validate.csv"),
        (
            "kinetics400",
            {"train.csv": "label,id\n", "validate.csv": "label,id\n"},
            "missing columns",
        ),
        (
            "ssv2",
            {"labels.json": "{", "train.json": "[]", "validation.json": "[]"},
            r"labels\.json: not valid JSON",
        ),
        ("ssv2", {"labels.json": "{}"}, r"train\.json not found"),
    ],
)
def test_missing_or_malformed_split_files_fail_before_work(tmp_path, dataset, files, match):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SplitFileError, match=match):
        discover(dataset, opts(tmp_path))


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover("ucf101", opts(tmp_path / "nope"))
    with pytest.raises(ValueError, match="needs --root"):
        discover("hmdb51", DiscoverOptions(root=None))


def test_numeric_csv_labels_keep_numeric_order(tmp_path):
    ucf_frames(tmp_path, ["v0", "v1", "v2", "v10"])
    rows = "".join(f"v{n},{n},train\n" for n in (0, 1, 2, 10))
    (tmp_path / "split.csv").write_text("folder_name,label,split\n" + rows)
    index = discover("ucf101", opts(tmp_path))
    assert index.classes == ["0", "1", "2", "10"]
    assert {r.video_id: r.label for r in index.records} == {"v0": 0, "v1": 1, "v2": 2, "v10": 3}


def test_hmdb51_from_the_reference_csv(tmp_path):
    for name in ("a", "b"):
        write_frame_folder(tmp_path / "jpegs_112" / name, 2, size=(32, 24))
    (tmp_path / "hmdb.csv").write_text("folder_name,label,split\na,wave,train\nb,clap,test\n")
    index = discover("hmdb51", opts(tmp_path))
    assert index.classes == ["clap", "wave"]
    assert sorted((r.video_id, r.label, r.split) for r in index.records) == [
        ("a", 1, "train"),
        ("b", 0, "test"),
    ]


def test_video_folder_lists_an_empty_class_folder(tmp_path):
    write_frame_folder(tmp_path / "jump" / "j0", 2, size=(32, 24))
    (tmp_path / "wave").mkdir()
    index = discover("video-folder", opts(tmp_path))
    assert index.classes == ["jump"]
    assert [(p.video_id, p.reason) for p in index.problems] == [
        ("wave", "class folder holds no video files or frame folders")
    ]
