"""The validation split: carved from the training videos, so that every choice (hyperparameters,
stopping, the best set) is made without reading the test split (SPEC §1, §8).

Per class, the training videos are put in groups (UCF101's ``gNN`` groups share actors and
scenes, so a group lies wholly in train or in val; datasets without groups put each video in
its own), the groups are shuffled with (seed, class), and whole groups move to val until it
holds at least ``max(min_per_class, round(fraction * videos))`` videos. A class always keeps
at least one group for training; a class of a single group gets no val videos (counted in the
manifest as ``classes_without_val``). The result depends only on the seed and the class's own
videos: adding a class changes no other class's split.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from s2d_ray.data.index import VideoRecord
from s2d_ray.seeding import numpy_rng

# Defaults of ``--val-fraction`` and ``--val-min-per-class``: on MiniUCF (about 93 training
# videos per class in groups of 4-7) one or two groups per class; on the embedded set (40) 4.
VAL_FRACTION = 0.1
VAL_MIN_PER_CLASS = 2

GroupOf = Callable[[str], str]
_UCF_GROUP = re.compile(r"_g(\d+)_c\d+$")


def ucf_group(video_id: str) -> str:
    """UCF101's group of a video id ``v_<Class>_gNN_cMM``; an id without one is its own group."""
    match = _UCF_GROUP.search(video_id)
    return f"g{int(match.group(1)):02d}" if match else video_id


def video_group(video_id: str) -> str:
    return video_id


@dataclass(frozen=True)
class ValidationPlan:
    """What carving did, for ``dataset.json``."""

    fraction: float
    min_per_class: int
    grouped_by: str
    seed: int
    videos: int
    groups: int
    classes_without_val: list[str]

    def to_json(self) -> dict:
        return {
            "fraction": self.fraction,
            "min_per_class": self.min_per_class,
            "grouped_by": self.grouped_by,
            "seed": self.seed,
            "videos": self.videos,
            "groups": self.groups,
            "classes_without_val": self.classes_without_val,
        }


def carve_validation(
    records: list[VideoRecord],
    *,
    fraction: float,
    min_per_class: int,
    seed: int,
    group_of: GroupOf = video_group,
    grouped_by: str = "video",
) -> tuple[list[VideoRecord], ValidationPlan]:
    """``records`` with some training videos moved to split ``val`` (see the module doc)."""
    by_class: dict[str, dict[str, list[VideoRecord]]] = {}
    for r in records:
        if r.split == "train":
            by_class.setdefault(r.class_name, {}).setdefault(group_of(r.video_id), []).append(r)
    to_val: set[tuple[str, str]] = set()
    groups_moved, without = 0, []
    if fraction > 0:
        for class_name, groups in sorted(by_class.items()):
            names = sorted(groups)
            videos = sum(len(g) for g in groups.values())
            want = max(min_per_class, round(fraction * videos))
            order = numpy_rng(seed, "val-split", class_name).permutation(len(names))
            moved = 0
            for i in order[: len(names) - 1]:  # one group at least stays in train
                if moved >= want:
                    break
                group = groups[names[int(i)]]
                to_val.update((class_name, r.video_id) for r in group)
                moved += len(group)
                groups_moved += 1
            if not moved:
                without.append(class_name)
    out = [replace(r, split="val") if (r.class_name, r.video_id) in to_val else r for r in records]
    plan = ValidationPlan(
        fraction, min_per_class, grouped_by, seed, len(to_val), groups_moved, without
    )
    return out, plan
