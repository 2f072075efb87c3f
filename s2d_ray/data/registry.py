"""The dataset registry: class list, default clip spec and on-disk layouts of each dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from s2d_ray.data import embedded
from s2d_ray.data.index import (
    VIDEO_EXTENSIONS,
    DatasetIndex,
    MediaIndex,
    Problem,
    VideoRecord,
    is_frame_folder,
)
from s2d_ray.data.readers.splits import (
    SplitEntry,
    SplitFileError,
    read_class_index,
    read_hmdb_split,
    read_kinetics_csv,
    read_reference_csv,
    read_ssv2,
    read_ucf_list,
)
from s2d_ray.data.spec import ClipSpec
from s2d_ray.data.validation import GroupOf, ucf_group, video_group
from s2d_ray.seeding import derive_seed, numpy_rng

MINIUCF_CLASSES = sorted(
    [
        "ApplyEyeMakeup",
        "BalanceBeam",
        "BandMarching",
        "BaseballPitch",
        "Basketball",
        "BasketballDunk",
        "Biking",
        "Billiards",
        "BlowingCandles",
        "Bowling",
        "BreastStroke",
        "CleanAndJerk",
        "CliffDiving",
        "CricketShot",
        "Diving",
        "FloorGymnastics",
        "FrisbeeCatch",
        "GolfSwing",
        "HammerThrow",
        "HighJump",
        "HorseRace",
        "HorseRiding",
        "HulaHoop",
        "IceDancing",
        "JumpingJack",
        "Knitting",
        "MilitaryParade",
        "Mixing",
        "ParallelBars",
        "PlayingPiano",
        "PlayingViolin",
        "PoleVault",
        "PommelHorse",
        "Punch",
        "Rafting",
        "Rowing",
        "SkateBoarding",
        "Skiing",
        "Skijet",
        "SkyDiving",
        "SoccerPenalty",
        "StillRings",
        "SumoWrestling",
        "Surfing",
        "Swing",
        "TennisSwing",
        "TrampolineJumping",
        "UnevenBars",
        "VolleyballSpiking",
        "WritingOnBoard",
    ]
)


@dataclass(frozen=True)
class DiscoverOptions:
    root: Path | None
    split_file: Path | None = None
    test_fraction: float = 0.2
    seed: int = 0


# Train clips stored per video. Expert epochs draw one of them per video per epoch, the
# temporal jitter of SPEC §1 (the reference drew a fresh start from every valid one). Four
# clips at stratified starts (one per quarter of the valid range, or four centred phases)
# cover the whole video: each of the 10 expert epochs sees one of 4 distinct clips, at 4x
# the bytes of one clip per video. MiniUCF at 16x112² is 10.5 GiB raw; zstd stored the real
# ARID sample clips at 0.41 of raw, i.e. ~4.2 GiB (brighter footage compresses less).
TRAIN_CLIPS_PER_VIDEO = 4


@dataclass(frozen=True)
class DatasetDefinition:
    """``flip``: whether training on real clips mirrors them (SPEC §1: the reference flips
    UCF101/MiniUCF and HMDB51; its Kinetics-400 and SSv2 loaders never flip, and flips would
    swap the left/right motion classes of SSv2 and of the embedded set).

    ``group_of``: the group of a video id, which the validation split never divides
    (``grouped_by`` names it in ``dataset.json``)."""

    name: str
    clip: ClipSpec
    discover: Callable[[DiscoverOptions], DatasetIndex]
    needs_root: bool = True
    description: str = ""
    flip: bool = False
    train_clips: int = TRAIN_CLIPS_PER_VIDEO
    group_of: GroupOf = video_group
    grouped_by: str = "video"


DATASETS: dict[str, DatasetDefinition] = {}


def register_dataset(
    name: str,
    clip: ClipSpec,
    *,
    needs_root: bool = True,
    description: str = "",
    flip: bool = False,
    train_clips: int = TRAIN_CLIPS_PER_VIDEO,
    groups: tuple[str, GroupOf] = ("video", video_group),
):
    def wrap(fn: Callable[[DiscoverOptions], DatasetIndex]):
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} registered twice")
        grouped_by, group_of = groups
        DATASETS[name] = DatasetDefinition(
            name,
            clip,
            fn,
            needs_root,
            description or fn.__doc__,
            flip,
            train_clips,
            group_of,
            grouped_by,
        )
        return fn

    return wrap


def get_dataset(name: str) -> DatasetDefinition:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def discover(name: str, options: DiscoverOptions) -> DatasetIndex:
    """List a dataset's videos. Missing roots and split files fail here, before any work."""
    definition = get_dataset(name)
    if definition.needs_root:
        if options.root is None:
            raise ValueError(f"dataset {name!r} needs --root DIR (the folder holding its videos)")
        if not options.root.is_dir():
            raise FileNotFoundError(f"dataset root {options.root} does not exist or is no folder")
    return definition.discover(options)


# --- helpers shared by the split-file datasets ------------------------------------------------


def _find(options: DiscoverOptions, pattern: str) -> list[Path]:
    """Split files named ``pattern`` in --split-file (a file or folder) or under the root."""
    where = options.split_file or options.root
    assert where is not None
    if where.is_file():
        return [where] if where.match(pattern) else []
    # One level down at most: deeper lies the frame tree (millions of files for UCF101).
    return sorted(where.glob(pattern)) + sorted(where.glob(f"*/{pattern}"))


def _index_entries(
    options: DiscoverOptions, classes: list[str], entries: Iterable[SplitEntry]
) -> DatasetIndex:
    """Resolve split entries to media under the root; unknowns become problems, not crashes."""
    assert options.root is not None
    media = MediaIndex(options.root)
    index = DatasetIndex(classes=classes)
    label_of = {c: i for i, c in enumerate(classes)}
    for e in entries:
        if e.class_name not in label_of:
            reason = f"class {e.class_name!r} is not in the class list (from {e.where})"
            index.problems.append(Problem(e.video_id, e.where, reason))
            continue
        try:
            path, kind = media.find(e.video_id, class_hint=e.class_name)
        except LookupError as exc:
            index.problems.append(Problem(e.video_id, e.where, str(exc)))
            continue
        label = label_of[e.class_name]
        index.records.append(VideoRecord(e.video_id, str(path), kind, label, e.class_name, e.split))
    return index


def _reference_csv(
    options: DiscoverOptions, classes: list[str] | None
) -> tuple[list[str], list[SplitEntry]] | None:
    """The reference ``folder_name,label,split`` CSV, if there is one; classes sorted."""
    csvs = [p for p in _find(options, "*.csv") if _has_reference_header(p)]
    if not csvs:
        return None
    if len(csvs) > 1:
        raise SplitFileError(f"several split CSVs found ({csvs[0]}, {csvs[1]}): pass --split-file")
    entries = read_reference_csv(csvs[0], classes)
    names = {e.class_name for e in entries}
    numeric = all(n.isdigit() for n in names)  # labels given as indices: keep their order
    return classes or sorted(names, key=int if numeric else str), entries


def _ucf_entries(
    options: DiscoverOptions, classes: list[str] | None
) -> tuple[list[str], list[SplitEntry]]:
    found = _reference_csv(options, classes)
    if found:
        return found
    class_files = _find(options, "classInd.txt")
    if class_files:
        folder = class_files[0].parent
        official = read_class_index(class_files[0])
        for name in ("trainlist01.txt", "testlist01.txt"):
            if not (folder / name).is_file():
                raise SplitFileError(f"{folder / name} is missing; it must sit beside classInd.txt")
        entries = read_ucf_list(folder / "trainlist01.txt", "train")
        entries += read_ucf_list(folder / "testlist01.txt", "test")
        return classes or official, entries
    raise SplitFileError(
        f"no split file under {options.split_file or options.root}: pass --split-file with a CSV "
        "of columns folder_name,label,split, or a folder holding the official UCF101 lists "
        "classInd.txt, trainlist01.txt and testlist01.txt"
    )


def _has_reference_header(path: Path) -> bool:
    with path.open(encoding="utf-8-sig") as handle:
        return handle.readline().strip().startswith("folder_name,label,split")


# --- the datasets ---------------------------------------------------------------------------

_CLIP16 = ClipSpec(frames=16, size=112, sampling="stride", stride=4)
_CLIP8 = ClipSpec(frames=8, size=64, sampling="centred")


_UCF_GROUPS = ("UCF101 group gNN", ucf_group)


@register_dataset("miniucf", _CLIP16, flip=True, groups=_UCF_GROUPS)
def _miniucf(options: DiscoverOptions) -> DatasetIndex:
    """The 50 UCF101 classes of the S2D paper, UCF101 split 1 (4662 train / 1861 test)."""
    _, entries = _ucf_entries(options, MINIUCF_CLASSES)
    wanted = set(MINIUCF_CLASSES)
    entries = [e for e in entries if e.class_name in wanted]
    return _index_entries(options, MINIUCF_CLASSES, entries)


@register_dataset("ucf101", _CLIP16, flip=True, groups=_UCF_GROUPS)
def _ucf101(options: DiscoverOptions) -> DatasetIndex:
    """UCF101, split 1 (9537 train / 3783 test)."""
    classes, entries = _ucf_entries(options, None)
    return _index_entries(options, classes, entries)


@register_dataset("hmdb51", _CLIP16, flip=True)
def _hmdb51(options: DiscoverOptions) -> DatasetIndex:
    """HMDB51: test = split-1 test list; train = every other clip (5236 / 1530)."""
    found = _reference_csv(options, None)
    if found:
        return _index_entries(options, *found)
    files = _find(options, "*_test_split1.txt")
    if not files:
        raise SplitFileError(
            "no HMDB51 split CSV (folder_name,label,split) or <class>_test_split1.txt lists "
            f"under {options.split_file or options.root}: pass --split-file with the CSV or "
            "the folder of the official testTrainMulti lists"
        )
    entries = [e for f in files for e in read_hmdb_split(f)]
    classes = sorted({f.name.removesuffix("_test_split1.txt") for f in files})
    return _index_entries(options, classes, entries)


@register_dataset("kinetics400", _CLIP8)
def _kinetics400(options: DiscoverOptions) -> DatasetIndex:
    """Kinetics-400 from train.csv / validate.csv; 8 frames of 64×64."""
    found = {name: _find(options, name) for name in ("train.csv", "validate.csv")}
    for name, paths in found.items():
        if not paths:
            raise SplitFileError(
                f"{name} not found under {options.split_file or options.root}: "
                "pass --split-file with the folder holding train.csv and validate.csv"
            )
    entries = read_kinetics_csv(found["train.csv"][0], "train")
    classes = sorted({e.class_name for e in entries})
    entries += read_kinetics_csv(found["validate.csv"][0], "test")
    return _index_entries(options, classes, entries)


@register_dataset("ssv2", _CLIP8)
def _ssv2(options: DiscoverOptions) -> DatasetIndex:
    """Something-Something V2: labels.json + train.json / validation.json; 8 centred frames."""
    found = {n: _find(options, n) for n in ("labels.json", "train.json", "validation.json")}
    for name, paths in found.items():
        if not paths:
            raise SplitFileError(
                f"{name} not found under {options.split_file or options.root}: "
                "pass --split-file with the folder of the SSv2 label files"
            )
    classes, train = read_ssv2(found["labels.json"][0], found["train.json"][0], "train")
    _, test = read_ssv2(found["labels.json"][0], found["validation.json"][0], "test")
    return _index_entries(options, classes, train + test)


@register_dataset("video-folder", _CLIP16)
def _video_folder(options: DiscoverOptions) -> DatasetIndex:
    """Any tree ``<root>/<class>/<video file or frame folder>``, split per class with the seed.

    Each class's items are shuffled with (seed, class) and ``round(test_fraction * n)`` of
    them (at least one when the class has two or more) go to test: a stratified split that
    does not change when other classes are added.
    """
    assert options.root is not None
    if not 0.0 <= options.test_fraction < 1.0:
        raise ValueError(f"--test-fraction must be in [0, 1), got {options.test_fraction}")
    index = DatasetIndex(classes=[])
    per_class: dict[str, list[tuple[str, Path, str]]] = {}
    for class_dir in sorted(p for p in options.root.iterdir() if p.is_dir()):
        try:
            children = sorted(class_dir.iterdir())
        except OSError as exc:
            index.problems.append(
                Problem(class_dir.name, str(class_dir), f"unreadable ({exc.strerror})")
            )
            continue
        items = []
        for child in children:
            if child.is_file() and child.suffix.lower() in VIDEO_EXTENSIONS:
                items.append((child.stem, child, "video"))
            elif child.is_dir() and is_frame_folder(child):
                items.append((child.name, child, "frames"))
            elif child.is_dir():
                index.problems.append(
                    Problem(child.name, str(child), "folder holds no frame images")
                )
        if items:
            per_class[class_dir.name] = items
        else:
            reason = "class folder holds no video files or frame folders"
            index.problems.append(Problem(class_dir.name, str(class_dir), reason))
    if not per_class:
        raise FileNotFoundError(f"{options.root} holds no <class>/<video or frame folder> entries")
    index.classes = sorted(per_class)
    for label, class_name in enumerate(index.classes):
        items = per_class[class_name]
        order = numpy_rng(options.seed, "video-folder-split", class_name).permutation(len(items))
        n_test = round(options.test_fraction * len(items))
        if options.test_fraction > 0 and len(items) >= 2:
            n_test = min(max(n_test, 1), len(items) - 1)
        test = {int(i) for i in order[:n_test]}
        for i, (video_id, path, kind) in enumerate(items):
            split = "test" if i in test else "train"
            index.records.append(VideoRecord(video_id, str(path), kind, label, class_name, split))  # type: ignore[arg-type]
    return index


@register_dataset(
    "embedded",
    ClipSpec(frames=embedded.DEFAULT_FRAMES, size=embedded.DEFAULT_SIZE, sampling="centred"),
    needs_root=False,
)
def _embedded(options: DiscoverOptions) -> DatasetIndex:
    """The generated default dataset (s2d_ray.data.embedded); no files needed."""
    classes = [c.name for c in embedded.EMBEDDED_CLASSES]
    index = DatasetIndex(classes=classes)
    for split, count in (("train", embedded.TRAIN_PER_CLASS), ("test", embedded.TEST_PER_CLASS)):
        for label, name in enumerate(classes):
            for i in range(count):
                seed = derive_seed(options.seed, "embedded", split, label, i) % (1 << 32)
                record = VideoRecord(
                    f"{name}_{split}_{i:03d}",
                    f"embedded://{label}/{seed}",
                    "embedded",
                    label,
                    name,
                    split,
                )  # type: ignore[arg-type]
                index.records.append(record)
    return index


def iter_dataset_names() -> list[str]:
    return sorted(DATASETS)


__all__ = [
    "DATASETS",
    "MINIUCF_CLASSES",
    "DatasetDefinition",
    "DiscoverOptions",
    "discover",
    "get_dataset",
    "iter_dataset_names",
    "register_dataset",
]
