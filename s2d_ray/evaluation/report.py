"""Results as users read them: every accuracy beside its stored MiB, the static/dynamic group
accuracies, the same-size random real baseline and the full data (both cached per dataset
and protocol)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from s2d_ray import files
from s2d_ray.config import config_fingerprint
from s2d_ray.data.clips import ClipDataset
from s2d_ray.evaluation.protocol import (
    EvalConfig,
    EvalResult,
    evaluate_real,
    evaluate_set,
    with_own_settings,
)
from s2d_ray.methods.real import RealData

MIB = 2**20


def random_baseline(
    real: RealData,
    test: ClipDataset,
    ipc: int,
    config: EvalConfig,
    also: Sequence[ClipDataset] = (),
) -> EvalResult:
    """ipc random real videos per class, evaluated exactly like the set it sits beside
    (a cross-architecture network's own epochs and lr included, as the set gets them)."""
    config = with_own_settings(config, {})

    def run() -> EvalResult:
        clips, labels = real.random_videos(ipc, config.seed)
        return evaluate_set(clips, labels, test, config, device=real.device, also=also)

    return _cached(real, f"random-ipc{ipc}", {"ipc": ipc}, config, run, test, also)


def full_data_baseline(
    real: RealData,
    test: ClipDataset,
    config: EvalConfig,
    *,
    flip: bool,
    also: Sequence[ClipDataset] = (),
) -> EvalResult:
    """The protocol trained on every real training clip: the upper-bound row (with a
    cross-architecture network's own epochs and lr, as the rows beside it)."""
    config = with_own_settings(config, {})

    def run() -> EvalResult:
        return evaluate_real(real.train, test, config, flip=flip, device=real.device, also=also)

    return _cached(real, "full", {"flip": flip}, config, run, test, also)


def _cached(
    real: RealData, name: str, extra: dict, config: EvalConfig, run, test, also
) -> EvalResult:
    """A baseline computed once per dataset, protocol and scored splits, kept next to the
    shards: every search and evaluation of the same data reads it instead of training it
    again."""
    splits = [test.split, *(other.split for other in also)]
    key = config_fingerprint(
        {
            "data": real.shards.fingerprint,
            **extra,
            "eval": config.model_dump(mode="json"),
            "splits": splits,
        }
    )
    cache = files.join(real.shards.root, "baselines", f"{name}-{key}.json")
    fs = real.shards.fs
    if files.exists(fs, cache):
        return EvalResult.from_dict(files.read_json(fs, cache))
    result = run()
    fs.create_dir(files.join(real.shards.root, "baselines"), recursive=True)
    files.write_json(fs, cache, result.to_dict())
    return result


@dataclass
class ResultRow:
    name: str
    result: EvalResult
    mib: float | None
    groups: dict | None = None

    def cells(self, also: Sequence[str] = ()) -> list[str]:
        r = self.result
        cells = [self.name, f"{100 * r.mean:.1f} ± {100 * r.std:.1f}", f"{100 * r.top5_mean:.1f}"]
        for split in also:
            mean = r.also_mean(split)
            cells.append("-" if mean != mean else f"{100 * mean:.1f}")
        for group in ("static", "dynamic"):
            if self.groups:
                mean, std = r.group_accuracy(self.groups[group])
                cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}")
            else:
                cells.append("-")
        cells.append("-" if self.mib is None else f"{self.mib:.3f}")
        return cells

    @classmethod
    def from_dict(cls, d: dict, groups: dict | None = None) -> ResultRow:
        return cls(d["name"], EvalResult.from_dict(d), d["mib"], groups)

    def to_dict(self) -> dict:
        out = {"name": self.name, "mib": self.mib, **self.result.to_dict()}
        if self.groups:
            for group in ("static", "dynamic"):
                out[f"{group}_mean"], out[f"{group}_std"] = self.result.group_accuracy(
                    self.groups[group]
                )
        return out


def header(split: str, also: Sequence[str] = ()) -> list[str]:
    """Column names; every accuracy column names the split it was scored on."""
    return [
        "set",
        f"{split} top-1 %",
        f"{split} top-5 %",
        *(f"{other} top-1 %" for other in also),
        f"{split} static %",
        f"{split} dynamic %",
        "MiB",
    ]


def table_columns(rows: list[ResultRow]) -> dict[str, list]:
    """The table as columns of numbers (percent, MiB), for MLflow's ``log_table``: the UI
    shows it as a table, ``mlflow.load_table`` reads it back."""
    split = rows[0].result.split if rows else "test"
    also = sorted({s for row in rows for s in row.result.also})
    columns: dict[str, list] = {"set": [row.name for row in rows]}
    columns[f"{split}_top1_mean"] = [100 * row.result.mean for row in rows]
    columns[f"{split}_top1_std"] = [100 * row.result.std for row in rows]
    columns[f"{split}_top5_mean"] = [100 * row.result.top5_mean for row in rows]
    for other in also:
        columns[f"{other}_top1_mean"] = [100 * row.result.also_mean(other) for row in rows]
    for group in ("static", "dynamic"):
        columns[f"{split}_{group}_mean"] = [
            100 * row.result.group_accuracy(row.groups[group])[0] if row.groups else None
            for row in rows
        ]
    columns["networks"] = [len(row.result.top1) for row in rows]
    columns["mib"] = [row.mib for row in rows]
    return columns


def format_table(rows: list[ResultRow]) -> str:
    """A Markdown table, one row per result; a column for each extra split any row has."""
    split = rows[0].result.split if rows else "test"
    if any(row.result.split != split for row in rows):
        raise ValueError("one table holds rows scored on one split")
    also = sorted({s for row in rows for s in row.result.also})
    names = header(split, also)
    lines = [names] + [row.cells(also) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(names))]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    divider = fmt(["-" * w for w in widths])
    return "\n".join([fmt(lines[0]), divider] + [fmt(line) for line in lines[1:]])
