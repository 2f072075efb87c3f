"""The node cache: decoded row groups on the node's local disk, shared by its processes.

Shards are zstd Parquet, where one row group is the smallest readable unit: a random clip
costs a row group's download and decompression. The cache keeps each row group it decoded as
one raw uint8 file, so a clip is then one ``pread`` of its own bytes from the page cache
(random access for DM's per-class draws, repeated epochs), whatever the shards' storage.

- Bounded: once its writes take the cache past ``limit_bytes``, the least recently used
  files go until it fits (a row group larger than the limit is served but not kept).
- Shared: files are named by the dataset's fingerprint and the row group, so every process
  of the node (two trials, a farm's workers) reads one copy.
- Safe: a file is written under a private temporary name and renamed into place, so readers
  see a whole file or none; eviction runs under a lock; temporaries left by a crashed process
  are removed by the next eviction. A file deleted while another process reads it stays
  readable to that reader (POSIX unlink), and is rebuilt by the next one that needs it.

Not anonymous memory: what the cache holds counts as page cache, which the kernel reclaims.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

CACHE_DIR_ENV = "S2D_CACHE_DIR"
CACHE_GIB_ENV = "S2D_CACHE_GIB"
DEFAULT_GIB = 32.0
_TMP = ".tmp-"
_STALE_SECONDS = 3600.0
_RECENT_SECONDS = 30.0
_RESCAN_WRITES = 256


def default_cache() -> NodeCache | None:
    """The node cache the environment asks for: ``$S2D_CACHE_DIR`` (default
    ``~/.cache/s2d-ray/clips``) bounded by ``$S2D_CACHE_GIB`` (default 32; 0 turns it off)."""
    gib = float(os.environ.get(CACHE_GIB_ENV, DEFAULT_GIB))
    if gib <= 0:
        return None
    root = os.environ.get(CACHE_DIR_ENV) or os.path.expanduser("~/.cache/s2d-ray/clips")
    return NodeCache(root, int(gib * 2**30))


class NodeCache:
    def __init__(self, root: str | os.PathLike, limit_bytes: int) -> None:
        self.root = Path(root)
        self.limit_bytes = int(limit_bytes)
        self._trimmed = False  # a limit lowered since the last run applies from the first use
        self._seen: dict[str, float] = {}  # key -> when last found: a stat and a utime less
        # What the last scan found plus what this process wrote since: a scan (a stat per
        # file) runs when that passes the limit, or every _RESCAN_WRITES writes for what
        # other processes wrote, not after every write.
        self._estimate, self._writes = 0, 0

    def path(self, key: str) -> Path:
        return self.root / f"{key}.u8"

    def get(self, key: str, build: Callable[[], np.ndarray]) -> Path | np.ndarray:
        """The cached file of ``key`` (built by ``build`` on a miss); the array itself when
        it is larger than the whole cache."""
        if not self._trimmed:
            self.evict()
            self._trimmed = True
        path = self.path(key)
        now = time.monotonic()
        if now - self._seen.get(key, -math.inf) < _RECENT_SECONDS:
            return path  # found a moment ago (if evicted since, the reader decodes it again)
        if path.exists():
            with contextlib.suppress(OSError):  # recency for the LRU order
                os.utime(path)
            self._seen[key] = now
            return path
        array = build()
        if array.nbytes > self.limit_bytes:
            return array
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{_TMP}{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as out:
                out.write(memoryview(np.ascontiguousarray(array)).cast("B"))
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._estimate += array.nbytes
        self._writes += 1
        if self._estimate > self.limit_bytes or self._writes % _RESCAN_WRITES == 0:
            self.evict()
        return path

    def evict(self) -> None:
        """Drop the least recently used files until the cache fits its limit."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries, total, now = [], 0, time.time()
            for path in self.root.rglob("*.u8*"):
                try:
                    info = path.stat()
                except FileNotFoundError:
                    continue
                if path.name.startswith(_TMP):
                    if now - info.st_mtime > _STALE_SECONDS or not _alive(path):
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                    continue
                entries.append((info.st_mtime, info.st_size, path))
                total += info.st_size
            for _, size, path in sorted(entries):
                if total <= self.limit_bytes:
                    break
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                total -= size
            self._estimate = total

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*.u8") if p.is_file())


def _alive(tmp: Path) -> bool:
    """Whether the process that writes temporary file ``tmp`` still runs."""
    try:
        pid = int(tmp.name.rsplit(".", 2)[-2])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def read_into(path: Path, offsets: np.ndarray, out: np.ndarray, where: np.ndarray) -> None:
    """Copy ``out[k].nbytes`` bytes at each of ``offsets`` of the cached file at ``path`` into
    ``out[where]``, straight into place (a clip, or one of its frames): one ``pread`` per run
    of items that lie end to end in both the file and ``out`` (a pass in stored order reads
    a row group's worth at once)."""
    nbytes = out[0].nbytes if len(out) else 0
    flat = out.reshape(len(out), -1)
    fd = os.open(path, os.O_RDONLY)
    try:
        k, n = 0, len(offsets)
        while k < n:
            end = k + 1
            while (
                end < n
                and offsets[end] == offsets[end - 1] + nbytes
                and where[end] == where[end - 1] + 1
            ):
                end += 1
            view = memoryview(flat[where[k] : where[k] + end - k]).cast("B")
            if os.preadv(fd, [view], int(offsets[k])) != nbytes * (end - k):
                raise OSError(
                    f"{path} ends before byte {int(offsets[end - 1]) + nbytes}: a torn "
                    "node-cache file (no s2d-ray writer leaves one); delete it and it is "
                    "rebuilt from the shards"
                )
            k = end
    finally:
        os.close(fd)
