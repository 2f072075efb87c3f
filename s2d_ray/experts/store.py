"""Checksummed, lazily readable store of expert training trajectories (for MTT).

Layout (any pyarrow filesystem: a local path, ``file://``, ``s3://`` ...)::

    <store>/store.json                          format version, settings, dataset fingerprint
    <store>/expert-0007/manifest.json           seed, epochs, status, precision, metrics,
                                                sha256 + size per snapshot
    <store>/expert-0007/epoch-0000.safetensors  flat float32 parameters at init ("params")
    <store>/expert-0007/epoch-0003.safetensors  ... after epoch 3

Why one file per snapshot rather than one per expert: appending an epoch is a single new file
plus a manifest rewrite (never a rewrite of what is already stored), resuming means "continue
after the last listed file", distillation fetches just the two snapshots it samples (two ~14 MB
GETs on object storage instead of a whole trajectory), and each file gets its own checksum, so
one bad file costs one snapshot, not the expert. The cost is more, smaller objects, which no
filesystem here minds at ~51 per expert.

Identity: ``settings`` is a readable dict of everything that shapes a trajectory (network,
clip shape, normalisation, standardisation, flip, clips per video, lr_teacher, batch size,
seed and seed rule; see ``experts.training.trajectory_settings``) plus the dataset
fingerprint. Precision is not identity but a record per expert (its manifest): IEEE fp32 and
TF32 trajectories differ by rounding (a 256-clip gradient by 1 %, bench/gpu_loops.py), far
less than one expert's seed differs from the next. Every open and every writer checks the
identity and names the keys that differ, so a store never mixes experts trained two ways,
and MTT reads it to preprocess its student's data the same way. How many epochs are stored
is not identity: a store is extended by re-running the farm with more epochs.

Crash safety: every file is written under a temp name in its final directory and then moved
into place, and the manifest is rewritten only AFTER the snapshot it lists is in place. The
manifest is the single source of truth: a file it does not list (a temp file, a snapshot whose
manifest update never happened) is not a snapshot, and a writer deletes such strays on resume.
Listed files are verified against their sha256 on every read, which also catches bit rot and
half-synced copies. Each expert has exactly one writer at a time (the farm's contract), so no
locking is needed. No pickle anywhere: tensors are safetensors, everything else is JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs
import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open

from s2d_ray import files
from s2d_ray.files import TMP_PREFIX, join, read_json, write_atomic, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
_STORE_FILE, _MANIFEST, _TENSOR = "store.json", "manifest.json", "params"
_EXPERT_DIR = re.compile(r"^expert-(\d+)$")
_REMEDY = "delete the expert directory and re-run the expert farm to retrain it"


class StoreMismatchError(ValueError):
    """The store (or an expert in it) was made with other settings, data or seed."""


class CorruptSnapshotError(RuntimeError):
    """A listed file is missing, truncated, or fails its checksum."""


@dataclass(frozen=True)
class ExpertInfo:
    expert_id: int
    seed: int
    planned_epochs: int
    epochs_completed: int
    complete: bool
    metrics: dict[str, list[float]]  # index e = after epoch e (0 = at init); NaN where not logged
    path: str
    num_snapshots: int = 0  # epochs_completed + 1 once the init snapshot exists
    precision: str = "fp32"  # what training actually ran in ("fp32+bf16" if resumed in another)


def _expert_dir(expert_id: int) -> str:
    return f"expert-{expert_id:04d}"


def _canonical(config: dict) -> dict:
    """JSON round trip, so tuples vs lists or key order never cause a false mismatch."""
    return json.loads(json.dumps(config, sort_keys=True))


def _without_precision(settings: dict) -> dict:
    """Stores made before precision was recorded per expert hold it in their identity."""
    return {k: v for k, v in settings.items() if k != "precision"}


def differences(recorded: dict, wanted: dict) -> list[str]:
    """``key: stored X, asked Y`` for every key whose values differ (absent keys included)."""
    missing = "<absent>"
    return [
        f"{k}: stored {recorded.get(k, missing)!r}, asked {wanted.get(k, missing)!r}"
        for k in sorted(set(recorded) | set(wanted))
        if recorded.get(k, missing) != wanted.get(k, missing)
    ]


def _encode_metric(value: float) -> float | str:
    """Strict JSON has no NaN/inf, yet a diverged loss is worth recording."""
    return float(value) if math.isfinite(value) else str(float(value))


def _read_json(fs: pafs.FileSystem, path: str) -> dict | None:
    """None when absent; a malformed manifest is corruption, with the remedy."""
    try:
        return read_json(fs, path)
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise CorruptSnapshotError(f"{e}; {_REMEDY}") from None


def _write_atomic(fs: pafs.FileSystem, path: str, data: bytes | dict) -> None:
    if isinstance(data, dict):
        write_json(fs, path, data)
    else:
        write_atomic(fs, path, data)


def _resolve(uri: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, root path on it, uri to show); ``filesystem`` makes ``uri`` a path on it."""
    if filesystem is not None:
        return filesystem, uri.rstrip("/"), uri
    fs, path = files.filesystem(uri)
    return fs, path, uri.rstrip("/") if "://" in uri else path


def _check_format(recorded: dict, what: str) -> None:
    version = recorded.get("format_version", 0)
    if version > FORMAT_VERSION:
        raise StoreMismatchError(f"{what} has format {version}, too new for this s2d-ray")
    if version < FORMAT_VERSION:
        raise StoreMismatchError(
            f"{what} has format {version}, written by an older s2d-ray that did not record how "
            "its experts were trained; train a new store (choose another --out)"
        )


class TrajectoryStore:
    """A directory of expert trajectories made with one set of settings on one dataset."""

    def __init__(
        self,
        uri: str,
        *,
        settings: dict,
        dataset_fingerprint: str,
        create: bool = True,
        filesystem: pafs.FileSystem | None = None,
    ):
        self._fs, self._root, self.uri = _resolve(uri, filesystem)
        # Only a real local filesystem can be memory-mapped; anything else is read as bytes.
        self._local = type(self._fs) is pafs.LocalFileSystem
        self.settings = _without_precision(_canonical(settings))
        self.dataset_fingerprint = str(dataset_fingerprint)
        self._read_only = False
        self._complete: dict[int, dict] = {}  # complete manifests never change: cache them
        self._pool: list[tuple[int, int]] | None = None  # (expert id, snapshots) for sampling
        recorded = _read_json(self._fs, join(self._root, _STORE_FILE))
        if recorded is None:
            if not create:
                raise FileNotFoundError(f"no trajectory store at {self.uri} (no {_STORE_FILE})")
            if self._root:
                self._fs.create_dir(self._root, recursive=True)
            header = {"format_version": FORMAT_VERSION, "created": time.time()}
            _write_atomic(self._fs, join(self._root, _STORE_FILE), {**header, **self._identity})
            # Re-read: a concurrent creator with another config may have won the race.
            recorded = _read_json(self._fs, join(self._root, _STORE_FILE)) or {}
        self._check(recorded, f"store {self.uri}")

    @classmethod
    def open(cls, uri: str, *, filesystem: pafs.FileSystem | None = None) -> TrajectoryStore:
        """Read-only open for consumers (MTT) that trust whatever config the store records."""
        fs, root, shown = _resolve(uri, filesystem)
        rec = _read_json(fs, join(root, _STORE_FILE))
        if rec is None:
            raise FileNotFoundError(f"no trajectory store at {shown} (no {_STORE_FILE})")
        _check_format(rec, f"store {shown}")
        cfg, fp = rec["settings"], rec["dataset_fingerprint"]
        kw = {"create": False, "filesystem": filesystem}
        store = cls(uri, settings=cfg, dataset_fingerprint=fp, **kw)
        store._read_only = True
        return store

    @property
    def _identity(self) -> dict:
        return {"settings": self.settings, "dataset_fingerprint": self.dataset_fingerprint}

    def _check(self, recorded: dict, what: str) -> None:
        _check_format(recorded, what)
        stored = {
            **_without_precision(recorded.get("settings", {})),
            "dataset_fingerprint": recorded.get("dataset_fingerprint"),
        }
        diff = differences(
            stored, {**self.settings, "dataset_fingerprint": self.dataset_fingerprint}
        )
        if diff:
            raise StoreMismatchError(
                f"{what} holds experts made with other settings ({'; '.join(diff)}): "
                "train with the store's settings, or choose another store"
            )

    def _manifest(self, expert_id: int, *, required: bool = False) -> dict | None:
        m = self._complete.get(expert_id)
        if m is None:
            m = _read_json(self._fs, join(self._root, _expert_dir(expert_id), _MANIFEST))
        if m is not None and m["status"] == "complete":
            self._complete[expert_id] = m
        if m is None and required:
            raise LookupError(f"expert {expert_id} is not in store {self.uri}")
        return m

    def _info(self, m: dict) -> ExpertInfo:
        snaps, eid = m["snapshots"], m["expert_id"]
        names = dict.fromkeys(k for s in snaps for k in s["metrics"])
        metrics = {k: [float(s["metrics"].get(k, math.nan)) for s in snaps] for k in names}
        path, done = join(self.uri, _expert_dir(eid)), m["status"] == "complete"
        return ExpertInfo(
            eid,
            m["seed"],
            m["planned_epochs"],
            max(len(snaps) - 1, 0),
            done,
            metrics,
            path,
            len(snaps),
            m.get("precision") or "fp32",
        )

    def _expert_ids(self) -> list[int]:
        listing = pafs.FileSelector(self._root, allow_not_found=True)
        infos = files.retrying(self._fs, self._root, lambda: self._fs.get_file_info(listing))
        found = [_EXPERT_DIR.match(i.base_name) for i in infos if i.type.name == "Directory"]
        return sorted(int(m.group(1)) for m in found if m)

    def experts(self, *, complete_only: bool = True) -> list[ExpertInfo]:
        manifests = (self._manifest(i) for i in self._expert_ids())
        infos = [self._info(m) for m in manifests if m is not None]
        return [i for i in infos if i.complete or not complete_only]

    def expert(self, expert_id: int) -> ExpertInfo | None:
        m = self._manifest(expert_id)
        return None if m is None else self._info(m)

    def writer(
        self, expert_id: int, *, seed: int, planned_epochs: int, precision: str = "fp32"
    ) -> ExpertWriter:
        """``precision``: what this training session actually runs in, recorded per expert."""
        if self._read_only:
            raise PermissionError(
                f"store {self.uri} was opened read-only; construct "
                "TrajectoryStore(uri, settings=..., ...) to write"
            )
        return ExpertWriter(
            self, expert_id, seed=seed, planned_epochs=planned_epochs, precision=precision
        )

    def _read(self, m: dict, epoch: int) -> torch.Tensor:
        """Fetch and verify one listed snapshot; nothing else is touched."""
        snaps = m["snapshots"]
        if not 0 <= epoch < len(snaps):
            have = f"epochs 0..{len(snaps) - 1}" if snaps else "no snapshots"
            raise IndexError(f"expert {m['expert_id']} has {have}, asked for epoch {epoch}")
        entry = snaps[epoch]
        path = join(self._root, _expert_dir(m["expert_id"]), entry["file"])

        def bad(why: str) -> CorruptSnapshotError:
            return CorruptSnapshotError(f"snapshot {path} {why}; {_REMEDY}")

        def fetch():
            with self._fs.open_input_file(path) as f:
                data = None if self._local else f.read()
                digest = hashlib.file_digest(f, "sha256") if data is None else hashlib.sha256(data)
                return data, digest, f.tell()

        try:  # local: hash in chunks, then memory-map; elsewhere: one GET, parse the bytes
            data, digest, size = files.retrying(self._fs, path, fetch)
        except FileNotFoundError:
            raise bad("is listed in the manifest but missing") from None
        if size != entry["bytes"] or digest.hexdigest() != entry["sha256"]:
            raise bad(f"fails its checksum ({size} bytes, manifest says {entry['bytes']})")
        try:
            if data is None:
                with safe_open(path, framework="pt") as f:
                    tensor = f.get_tensor(_TENSOR)
            else:
                tensor = safetensors.torch.load(data)[_TENSOR]
        except (SafetensorError, KeyError) as e:
            raise bad(f"matches its checksum but does not parse ({e})") from None
        if tensor.dtype != torch.float32 or tuple(tensor.shape) != (m["num_params"],):
            raise bad(f"holds {tensor.dtype} {tuple(tensor.shape)}, not ({m['num_params']},)")
        return tensor

    def load_snapshot(self, expert_id: int, epoch: int) -> torch.Tensor:
        return self._read(self._manifest(expert_id, required=True), epoch)

    def load_pair(self, expert_id: int, t0: int, expert_epochs: int) -> tuple[torch.Tensor, ...]:
        m = self._manifest(expert_id, required=True)
        return self._read(m, t0), self._read(m, t0 + expert_epochs)

    def refresh(self) -> None:
        """Forget cached manifests and the sampling pool (e.g. after more experts finished)."""
        self._complete.clear()
        self._pool = None

    def sample_start(
        self, rng: np.random.Generator, *, max_start_epoch: int, expert_epochs: int
    ) -> tuple[int, int]:
        """Draw (expert_id, t0). The expert set is frozen at the first call, so a seeded run
        samples the same sequence even while the farm keeps adding experts; see refresh()."""
        if max_start_epoch < 1 or expert_epochs < 1:
            raise ValueError("max_start_epoch and expert_epochs must be >= 1")
        if self._pool is None:
            self._pool = [(i.expert_id, i.num_snapshots) for i in self.experts()]
        need = max_start_epoch + expert_epochs
        ids = [eid for eid, n in self._pool if n >= need]
        if not ids:
            have = ", ".join(f"expert {e}: {n}" for e, n in self._pool) or "no complete experts"
            raise ValueError(
                f"no complete expert in {self.uri} has the {need} snapshots needed for "
                f"max_start_epoch={max_start_epoch} + expert_epochs={expert_epochs} "
                f"(snapshots present: {have})"
            )
        return ids[int(rng.integers(len(ids)))], int(rng.integers(max_start_epoch))

    def validate(self) -> list[str]:
        """Read and verify every listed file; a report for humans, so nothing is raised."""
        problems = []
        for eid in self._expert_ids():
            try:
                m = _read_json(self._fs, join(self._root, _expert_dir(eid), _MANIFEST))
                if m is not None:  # else: crashed before its first manifest, not an expert yet
                    self._check(m, f"expert {eid}")
            except (CorruptSnapshotError, StoreMismatchError) as e:
                problems.append(str(e))
                continue
            for epoch in range(len(m["snapshots"]) if m else 0):
                try:
                    self._read(m, epoch)
                except CorruptSnapshotError as e:
                    problems.append(str(e))
            if m and m["status"] == "complete" and len(m["snapshots"]) != m["planned_epochs"] + 1:
                problems.append(f"expert {eid} is complete but has {len(m['snapshots'])} snapshots")
        return problems


class ExpertWriter:
    """Appends one expert's snapshots in epoch order; reopening it resumes."""

    def __init__(
        self,
        store: TrajectoryStore,
        expert_id: int,
        *,
        seed: int,
        planned_epochs: int,
        precision: str = "fp32",
    ):
        self._store, self.expert_id = store, expert_id
        self._fs, self._dir = store._fs, join(store._root, _expert_dir(expert_id))
        self._fs.create_dir(self._dir, recursive=True)
        m = _read_json(self._fs, join(self._dir, _MANIFEST))
        if m is None:
            m = {
                "format_version": FORMAT_VERSION,
                "expert_id": expert_id,
                **store._identity,
                "seed": seed,
                "planned_epochs": planned_epochs,
                "status": "running",
                "precision": precision,
                "num_params": None,
                "dtype": "float32",
                "snapshots": [],
            }
        else:
            store._check(m, f"expert {expert_id} in store {store.uri}")
            if m["seed"] != seed:
                raise StoreMismatchError(
                    f"expert {expert_id} in {store.uri} was trained with seed {m['seed']}, you "
                    f"asked for seed {seed}; use another expert id or delete its directory"
                )
            if planned_epochs < len(m["snapshots"]) - 1:
                raise ValueError(
                    f"expert {expert_id} already has more than {planned_epochs} epochs"
                )
            if planned_epochs != m["planned_epochs"]:  # extending a trajectory reopens it
                m["planned_epochs"], m["status"] = planned_epochs, "running"
            if planned_epochs >= len(m["snapshots"]):  # something left to train this session
                used = set(m.get("precision", "fp32").split("+")) | {precision}
                m["precision"] = "+".join(sorted(used))
        self._m = m
        self._drop_bad_tail()
        self._clean_strays()
        self._save()

    @property
    def next_epoch(self) -> int:
        return len(self._m["snapshots"])

    def _drop_bad_tail(self) -> None:
        """Resume after the last snapshot that verifies; earlier ones are left to validate(),
        since hashing a whole trajectory on every resume would be slow on object storage."""
        snaps = self._m["snapshots"]
        while snaps:
            try:
                self._store._read(self._m, len(snaps) - 1)
                return
            except CorruptSnapshotError as e:
                log.warning(
                    "expert %d: dropping bad last snapshot on resume: %s", self.expert_id, e
                )
                snaps.pop()
                self._m["status"] = "running"

    def _clean_strays(self) -> None:
        listed = {s["file"] for s in self._m["snapshots"]}
        for info in self._fs.get_file_info(pafs.FileSelector(self._dir)):
            name = info.base_name
            unlisted = name.endswith(".safetensors") and name not in listed
            if info.type.name == "File" and (name.startswith(TMP_PREFIX) or unlisted):
                self._fs.delete_file(info.path)

    def _save(self) -> None:
        self._m["epochs_completed"] = max(self.next_epoch - 1, 0)
        self._m["updated"] = time.time()
        self._store._complete.pop(self.expert_id, None)
        _write_atomic(self._fs, join(self._dir, _MANIFEST), self._m)

    def last_snapshot(self) -> torch.Tensor | None:
        return self._store._read(self._m, self.next_epoch - 1) if self.next_epoch else None

    def write_snapshot(
        self, epoch: int, flat_params: torch.Tensor, metrics: dict[str, float] | None = None
    ) -> None:
        who, planned = f"expert {self.expert_id}", self._m["planned_epochs"]
        if epoch != self.next_epoch or epoch > planned:
            raise ValueError(
                f"{who}: got epoch {epoch}, the next snapshot is epoch "
                f"{self.next_epoch} of 0..{planned} (0 = init, written in order)"
            )
        if not isinstance(flat_params, torch.Tensor) or flat_params.dim() != 1:
            raise ValueError(f"{who}: flat_params must be a 1-D tensor of all parameters")
        if self._m["num_params"] not in (None, flat_params.numel()):
            raise ValueError(
                f"{who}: {flat_params.numel()} parameters, earlier snapshots have "
                f"{self._m['num_params']}"
            )
        # A real copy: on CPU .detach().cpu() is a view, so live training would overwrite it.
        params = flat_params.detach().to("cpu", torch.float32, copy=True).contiguous()
        meta = {"expert_id": str(self.expert_id), "epoch": str(epoch)}
        data = safetensors.torch.save({_TENSOR: params}, metadata=meta)
        name = f"epoch-{epoch:04d}.safetensors"
        _write_atomic(self._fs, join(self._dir, name), data)
        encoded = {k: _encode_metric(v) for k, v in (metrics or {}).items()}
        sha = hashlib.sha256(data).hexdigest()
        entry = {"epoch": epoch, "file": name, "bytes": len(data), "sha256": sha}
        self._m["snapshots"].append({**entry, "metrics": encoded})
        self._m["num_params"] = params.numel()
        self._save()  # only now does the snapshot exist

    def finish(self) -> ExpertInfo:
        planned = self._m["planned_epochs"]
        if self.next_epoch != planned + 1:
            raise ValueError(
                f"expert {self.expert_id}: finish() needs {planned + 1} snapshots "
                f"(init + {planned} epochs), {self.next_epoch} written"
            )
        self._m["status"] = "complete"
        self._save()
        return self._store._info(self._m)

    def metrics(self) -> dict[str, list[float]]:
        return self._store._info(self._m).metrics
