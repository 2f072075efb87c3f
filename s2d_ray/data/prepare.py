"""Dataset on disk -> clip shards: plan shards, build each (Ray tasks), write the manifest.

A shard is the unit of work and of resume: its Parquet file and then a small sidecar JSON are
renamed into place, so a shard is complete exactly when its sidecar exists and agrees with the
configuration. Re-running keeps complete shards and redoes the rest.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.fs as pafs
from pydantic import Field, field_validator, model_validator

from s2d_ray import __version__, files
from s2d_ray.cluster import init_ray
from s2d_ray.config import StrictConfig, absolute_uri, config_fingerprint
from s2d_ray.data import shards as sh
from s2d_ray.data.index import DatasetIndex, Problem, VideoRecord
from s2d_ray.data.readers.media import BadVideoError, open_media, read_clips
from s2d_ray.data.registry import DiscoverOptions, discover, get_dataset
from s2d_ray.data.spec import ClipSpec, SamplingPolicy, ShortPolicy
from s2d_ray.data.validation import (
    VAL_FRACTION,
    VAL_MIN_PER_CLASS,
    ValidationPlan,
    carve_validation,
)
from s2d_ray.progress import Progress
from s2d_ray.seeding import numpy_rng


class PrepareConfig(StrictConfig):
    """Everything that decides the content of a shard directory (and nothing else)."""

    dataset: str
    out: str
    root: str | None = None
    split_file: str | None = None
    frames: int | None = Field(default=None, ge=1)
    size: int | None = Field(default=None, ge=8)
    sampling: SamplingPolicy | None = None
    stride: int | None = Field(default=None, ge=1)
    short: ShortPolicy | None = None
    clips_per_video: int | None = Field(
        default=None, ge=1, description="train clips per video; default: the dataset's"
    )
    test_clips: int = Field(default=3, ge=1, description="clips per test (and val) video")
    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    val_fraction: float = Field(
        default=VAL_FRACTION,
        ge=0.0,
        lt=1.0,
        description="share of each class's training videos carved into the validation split",
    )
    val_min_per_class: int = Field(
        default=VAL_MIN_PER_CLASS, ge=0, description="val videos per class at least"
    )
    videos_per_shard: int = Field(default=64, ge=1)
    row_group_mib: float = Field(
        default=sh.ROW_GROUP_MIB,
        gt=0,
        description="uncompressed clip bytes per Parquet row group: the unit a reader fetches",
    )
    max_videos_per_class: int | None = Field(default=None, ge=1, description="per split; a subset")
    strict: bool = False
    seed: int = 0

    _absolute = field_validator("out", "root", "split_file")(absolute_uri)

    @model_validator(mode="after")
    def _known_dataset(self) -> PrepareConfig:
        definition = get_dataset(self.dataset)
        if definition.needs_root and self.root is None:
            raise ValueError(f"dataset {self.dataset!r} needs --root DIR")
        return self

    def clip_spec(self) -> ClipSpec:
        """The dataset's default clip spec with this config's overrides applied."""
        base = get_dataset(self.dataset).clip.model_dump()
        for key in ("frames", "size", "sampling", "stride", "short"):
            if getattr(self, key) is not None:
                base[key] = getattr(self, key)
        return ClipSpec(**base)

    def train_clips(self) -> int:
        """Train clips stored per video (expert epochs draw one of them per epoch)."""
        return self.clips_per_video or get_dataset(self.dataset).train_clips

    def content_fingerprint(self) -> str:
        """Hash of the fields that change shard bytes (not --strict, not the output path)."""
        data = self.model_dump(mode="json", exclude={"strict", "out"})
        data["clip"] = self.clip_spec().model_dump()
        data["clips_per_video"] = self.train_clips()
        return config_fingerprint(data)


@dataclass(frozen=True)
class ShardTask:
    relpath: str
    split: str
    label: int
    records: tuple[VideoRecord, ...]
    spec: ClipSpec
    num_clips: int
    seed: int
    fingerprint: str
    out: str
    strict: bool
    row_group_mib: float


@dataclass
class ShardResult:
    relpath: str
    split: str
    label: int
    rows: int
    bytes: int
    sha256: str
    videos: int
    problems: list[Problem] = field(default_factory=list)


def plan_shards(index: DatasetIndex, config: PrepareConfig) -> list[ShardTask]:
    """Deterministic shards: records sorted by (split, label, id), chunked per split and class."""
    spec, fingerprint = config.clip_spec(), config.content_fingerprint()
    groups: dict[tuple[str, int], list[VideoRecord]] = {}
    for record in sorted(index.records, key=lambda r: (r.split, r.label, r.video_id)):
        groups.setdefault((record.split, record.label), []).append(record)
    tasks = []
    for (split, label), records in sorted(groups.items()):
        # val clips are drawn as test clips are: a fixed, seeded set scored every time
        num_clips = config.train_clips() if split == "train" else config.test_clips
        for part, start in enumerate(range(0, len(records), config.videos_per_shard)):
            chunk = tuple(records[start : start + config.videos_per_shard])
            # The shard's identity includes its videos: adding or removing a video shifts
            # records between shards, and a shard must never be kept with stale content.
            content = [(r.video_id, r.source, r.label) for r in chunk]
            shard_fingerprint = config_fingerprint([fingerprint, content])
            tasks.append(
                ShardTask(
                    sh.shard_relpath(split, label, part),
                    split,
                    label,
                    chunk,
                    spec,
                    num_clips,
                    config.seed,
                    shard_fingerprint,
                    config.out,
                    config.strict,
                    config.row_group_mib,
                )
            )
    return tasks


def build_shard(task: ShardTask) -> ShardResult:
    """Decode every clip of one shard and write it; runs in a Ray task or in-process."""
    rows, problems = sh.ClipRows.empty(), []
    for record in task.records:
        rng = numpy_rng(task.seed, "clips", record.split, record.video_id)
        try:
            media = open_media(record)
            clips = read_clips(media, task.spec, num_clips=task.num_clips, rng=rng)
        except BadVideoError as exc:
            if task.strict:
                raise BadVideoError(
                    exc.path,
                    f"{exc.reason} (--strict stops at the first bad "
                    "video; drop --strict to skip and list bad videos)",
                ) from exc
            problems.append(Problem(record.video_id, exc.path, exc.reason))
            continue
        for k, (frames, indices) in enumerate(clips):
            rows.add(
                frames, record.label, record.class_name, record.video_id, record.split, k, indices
            )
    fs, out = files.filesystem(task.out)
    path = files.join(out, task.relpath)
    shape = task.spec.frame_shape
    per_group = sh.clips_per_row_group(shape, task.row_group_mib)
    nbytes, digest = sh.write_shard(fs, path, rows.to_table(shape), per_group)
    result = ShardResult(
        task.relpath,
        task.split,
        task.label,
        len(rows),
        nbytes,
        digest,
        len(task.records),
        problems,
    )
    sidecar = {"fingerprint": task.fingerprint, **asdict(result)}
    files.write_json(fs, _sidecar(path), sidecar)
    return result


def _sidecar(shard_path: str) -> str:
    return shard_path.removesuffix(".parquet") + ".json"


def load_complete(task: ShardTask) -> ShardResult | None:
    """The result of an earlier run of this shard, if it finished with the same config."""
    fs, out = files.filesystem(task.out)
    path = files.join(out, task.relpath)
    if not files.exists(fs, _sidecar(path)):
        return None
    data = files.read_json(fs, _sidecar(path))
    if data.get("fingerprint") != task.fingerprint:  # it covers the shard's video list
        return None
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound or info.size != data["bytes"]:
        return None
    data.pop("fingerprint")
    data["problems"] = [Problem(**p) for p in data["problems"]]
    return ShardResult(**data)


Runner = Callable[[list[ShardTask]], Iterable[ShardResult]]


def run_local(tasks: list[ShardTask]) -> Iterable[ShardResult]:
    for task in tasks:
        yield build_shard(task)


def run_ray(tasks: list[ShardTask]) -> Iterable[ShardResult]:
    """One Ray task per shard; results stream back as they finish, failures surface at once."""
    import ray

    init_ray(log_to_driver=False)
    remote = ray.remote(num_cpus=1, max_retries=2)(build_shard)
    pending = [remote.remote(t) for t in tasks]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        for ref in pending:
            ray.cancel(ref)


@dataclass
class PrepareSummary:
    out: str
    manifest: dict
    built: int
    reused: int
    problems: list[Problem]
    seconds: float
    seconds_per_video: float  # wall clock of the build phase (all workers) per built video


def prepare(
    config: PrepareConfig, runner: Runner = run_local, progress: bool = True
) -> PrepareSummary:
    """Build (or finish building) the shard directory ``config.out``; returns what it holds."""
    started = time.perf_counter()
    fs, out = files.filesystem(config.out)
    _check_previous(fs, out, config)
    options = DiscoverOptions(
        root=Path(config.root) if config.root else None,
        split_file=Path(config.split_file) if config.split_file else None,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    index = discover(config.dataset, options)
    if config.strict and index.problems:
        p = index.problems[0]
        raise BadVideoError(p.path, f"{p.reason} (--strict stops at the first bad entry)")
    definition = get_dataset(config.dataset)
    index.records, validation = carve_validation(
        index.records,
        fraction=config.val_fraction,
        min_per_class=config.val_min_per_class,
        seed=config.seed,
        group_of=definition.group_of,
        grouped_by=definition.grouped_by,
    )
    if config.max_videos_per_class is not None:
        index.records = _subset(index.records, config.max_videos_per_class)
    tasks = plan_shards(index, config)
    results, todo = [], []
    for task in tasks:
        done = load_complete(task)
        (results.append(done) if done else todo.append(task))
    reused = len(results)
    bar = _progress(sum(len(t.records) for t in todo), enabled=progress)
    build_started = time.perf_counter()
    for result in runner(todo):
        results.append(result)
        bar.update(result.videos)
    bar.close()
    build_seconds = time.perf_counter() - build_started
    problems = index.problems + [
        p for r in sorted(results, key=lambda r: r.relpath) for p in r.problems
    ]
    manifest = _manifest(config, index, results, problems, validation)
    manifest["row_index"] = sh.write_row_indexes(fs, out, manifest["shards"])
    files.write_json(fs, files.join(out, sh.MANIFEST), manifest)
    files.write_atomic(fs, files.join(out, sh.SKIPPED), _skipped_csv(problems))
    elapsed = time.perf_counter() - started
    built_videos = sum(r.videos for r in results[reused:])
    per_video = build_seconds / max(1, built_videos)
    return PrepareSummary(config.out, manifest, len(todo), reused, problems, elapsed, per_video)


def _subset(records: list[VideoRecord], per_class: int) -> list[VideoRecord]:
    """The first ``per_class`` videos (by id) of each class in each split: a quick-run subset."""
    kept: dict[tuple[str, int], list[VideoRecord]] = {}
    for record in sorted(records, key=lambda r: (r.split, r.label, r.video_id)):
        group = kept.setdefault((record.split, record.label), [])
        if len(group) < per_class:
            group.append(record)
    return [r for group in kept.values() for r in group]


def _check_previous(fs, out: str, config: PrepareConfig) -> None:
    path = files.join(out, sh.MANIFEST)
    if files.exists(fs, path):
        previous = files.read_json(fs, path)
        if previous.get("config_fingerprint") != config.content_fingerprint():
            raise FileExistsError(
                f"{config.out} already holds shards prepared with another configuration "
                f"({previous.get('config')}); choose a new --out or delete that folder"
            )


def _manifest(
    config: PrepareConfig,
    index: DatasetIndex,
    results: list[ShardResult],
    problems: list[Problem],
    validation: ValidationPlan,
) -> dict:
    spec = config.clip_spec()
    counts: dict[str, dict] = {}
    for r in results:
        split = counts.setdefault(r.split, {"videos": 0, "clips": 0, "clips_per_class": Counter()})
        split["videos"] += r.videos - len(r.problems)
        split["clips"] += r.rows
        split["clips_per_class"][index.classes[r.label]] += r.rows
    for split in counts.values():
        split["clips_per_class"] = dict(sorted(split["clips_per_class"].items()))
    shards = sorted(
        (
            {
                "path": r.relpath,
                "split": r.split,
                "label": r.label,
                "rows": r.rows,
                "bytes": r.bytes,
                "sha256": r.sha256,
            }
            for r in results
            if r.rows
        ),
        key=lambda s: s["path"],
    )
    content = config_fingerprint(
        {"clip": spec.model_dump(), "shards": [s["sha256"] for s in shards]}
    )
    return {
        "format": sh.FORMAT_VERSION,
        "dataset": config.dataset,
        "classes": index.classes,
        "clip": spec.model_dump(),
        "clip_shape": list(spec.frame_shape),
        "clips_per_video": {
            "train": config.train_clips(),
            "val": config.test_clips,
            "test": config.test_clips,
        },
        "counts": counts,
        "validation": validation.to_json(),
        "shards": shards,
        "skipped": len(problems),
        "fingerprint": content,
        "config": config.model_dump(mode="json"),
        "config_fingerprint": config.content_fingerprint(),
        "created_by": f"s2d-ray {__version__}",
    }


def _skipped_csv(problems: list[Problem]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["video_id", "path", "reason"])
    for p in problems:
        writer.writerow([p.video_id, p.path, p.reason])
    return buffer.getvalue().encode()


def _progress(total: int, enabled: bool) -> Progress:
    return Progress(total, "preparing", unit="video", enabled=enabled)
