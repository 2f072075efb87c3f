"""Parsers for the split files each dataset ships with. A bad split file is an error before work.

Each parser returns ``SplitEntry`` rows; mapping entries to media and classes is the
registry's job, so every format is parsed in one small function.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from s2d_ray.data.index import Split


class SplitFileError(ValueError):
    """A split file is missing or malformed; the message names the file and the fix."""


@dataclass(frozen=True)
class SplitEntry:
    video_id: str
    class_name: str
    split: Split
    where: str  # "file:line", for skipped.csv and error messages


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SplitFileError(f"cannot read split file {path}: {exc.strerror}") from exc
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _bad(path: Path, line: int, what: str, expected: str) -> SplitFileError:
    return SplitFileError(f"{path}:{line}: {what}; expected {expected}")


def read_reference_csv(path: Path, classes: list[str] | None) -> list[SplitEntry]:
    """The reference CSV ``folder_name,label,split``; label is a class name or a class index."""
    rows = _lines(path)
    header = [c.strip() for c in rows[0][1].split(",")] if rows else []
    if header[:3] != ["folder_name", "label", "split"]:
        raise _bad(path, 1, f"header {header}", "'folder_name,label,split'")
    entries = []
    for (n, _), row in zip(rows[1:], csv.reader(line for _, line in rows[1:]), strict=True):
        if len(row) < 3:
            raise _bad(path, n, f"{len(row)} columns", "folder_name,label,split")
        folder, label, split = (c.strip() for c in row[:3])
        if split not in ("train", "test"):
            raise _bad(path, n, f"split {split!r}", "'train' or 'test'")
        if label.isdigit() and classes is not None:
            index = int(label)
            if not 0 <= index < len(classes):
                raise _bad(path, n, f"class index {index}", f"0..{len(classes) - 1}")
            label = classes[index]
        entries.append(SplitEntry(folder, label, split, f"{path}:{n}"))  # type: ignore[arg-type]
    return entries


def read_class_index(path: Path) -> list[str]:
    """UCF101 ``classInd.txt``: ``<1-based index> <ClassName>`` per line, in index order."""
    classes = []
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(classes) + 1:
            raise _bad(path, n, repr(line), f"'{len(classes) + 1} ClassName'")
        classes.append(parts[1])
    return classes


def read_ucf_list(path: Path, split: Split) -> list[SplitEntry]:
    """UCF101 ``trainlist01.txt`` (``Class/v.avi 1``) or ``testlist01.txt`` (``Class/v.avi``)."""
    entries = []
    for n, line in _lines(path):
        item = line.split()[0]
        if "/" not in item:
            raise _bad(path, n, repr(line), "'ClassName/v_ClassName_gXX_cXX.avi'")
        class_name, filename = item.split("/", 1)
        entries.append(SplitEntry(Path(filename).stem, class_name, split, f"{path}:{n}"))
    return entries


def read_hmdb_split(path: Path) -> list[SplitEntry]:
    """HMDB51 ``<class>_test_split1.txt``: ``<video>.avi <0|1|2>``; 2 = test, the rest train.

    Training on everything outside the test list (ids 0 and 1) is what the paper does.
    """
    class_name = path.name.removesuffix("_test_split1.txt")
    entries = []
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise _bad(path, n, repr(line), "'<video>.avi <0|1|2>'")
        split: Split = "test" if parts[1] == "2" else "train"
        entries.append(SplitEntry(Path(parts[0]).stem, class_name, split, f"{path}:{n}"))
    return entries


def read_kinetics_csv(path: Path, split: Split) -> list[SplitEntry]:
    """Kinetics ``label,youtube_id,time_start,time_end,split``; id = ``<yt>_<start>_<end>``."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"label", "youtube_id", "time_start", "time_end"} - set(reader.fieldnames or [])
        if missing:
            raise _bad(
                path,
                1,
                f"missing columns {sorted(missing)}",
                "'label,youtube_id,time_start,time_end,split'",
            )
        entries = []
        for n, row in enumerate(reader, 2):
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError) as exc:
                raise _bad(path, n, "non-numeric time_start/time_end", "integers") from exc
            video_id = f"{row['youtube_id']}_{start:06d}_{end:06d}"
            entries.append(SplitEntry(video_id, row["label"], split, f"{path}:{n}"))
    return entries


def read_ssv2(
    labels_path: Path, items_path: Path, split: Split
) -> tuple[list[str], list[SplitEntry]]:
    """SSv2 ``labels.json`` ({name: "index"}) and ``train.json``/``validation.json`` lists.

    The class of an item is its template with the ``[...]`` brackets removed.
    """
    labels = _json(labels_path)
    if not isinstance(labels, dict):
        raise SplitFileError(f"{labels_path}: expected an object {{class name: index}}")
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    items = _json(items_path)
    if not isinstance(items, list):
        raise SplitFileError(f"{items_path}: expected a list of {{id, template}} objects")
    entries = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item or "template" not in item:
            raise SplitFileError(f"{items_path}: item {n} lacks 'id' or 'template': {item!r:.80}")
        class_name = item["template"].replace("[", "").replace("]", "")
        entries.append(SplitEntry(str(item["id"]), class_name, split, f"{items_path}#{n}"))
    return classes, entries


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SplitFileError(f"cannot read split file {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise SplitFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
