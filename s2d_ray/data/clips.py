"""The clips of one split, read on demand: what every consumer of real clips holds.

A ``ClipDataset`` holds the split's row index (a few bytes per clip) and nothing of the clips:
``batch(positions)`` fetches the row groups those positions live in (through the node cache,
``data/cache.py``) and copies out just their clips, so a process's memory is bounded by the
batches in flight, whatever the dataset's size. ``memory="all"`` decodes every row group once
into memory instead: the in-memory baseline of ``bench/streaming.py`` and nothing else.

Positions are the split's stored order (shard by shard, row by row), so a plan computed from
the index (an epoch's clips, a class's videos, a test pass) gives the same batches, bit for
bit, from any storage, any cache state and either reader (``batches(..., backend="ray")``,
``ray_batches``). ``FrameView`` shows a split as single frames, for the static memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from s2d_ray import files
from s2d_ray.data.cache import NodeCache, default_cache, read_into
from s2d_ray.data.stream import ClipShards
from s2d_ray.seeding import derive_seed

Memory = Literal["stream", "all"]
Backend = Literal["local", "ray"]
BACKEND_ENV = "S2D_DATA_BACKEND"
_DEFAULT = object()


def default_backend(location: str) -> Backend:
    """``$S2D_DATA_BACKEND`` (local or ray) if set; else Ray Data for shards behind a URI
    (shared storage) read inside a Ray cluster, the local reader otherwise (on one node it
    measured faster: bench/streaming.py)."""
    chosen = os.environ.get(BACKEND_ENV, "auto")
    if chosen not in ("auto", "local", "ray"):
        raise ValueError(f"{BACKEND_ENV}={chosen!r}: choose local, ray or auto")
    if chosen != "auto":
        return chosen
    import ray

    return "ray" if "://" in location and ray.is_initialized() else "local"


class ClipDataset:
    """One split's clips by position. ``cache``: the node cache (default: the environment's,
    ``default_cache``; None reads every row group from the shards); ``backend``: the reader
    of ``batches`` (default: ``default_backend``)."""

    def __init__(
        self,
        shards: ClipShards | str,
        split: str = "train",
        *,
        memory: Memory = "stream",
        cache: NodeCache | object | None = _DEFAULT,
        backend: Backend | None = None,
    ) -> None:
        if memory not in ("stream", "all") or backend not in (None, "local", "ray"):
            raise ValueError(
                f"memory={memory!r}, backend={backend!r}: memory is stream or all, backend "
                "local or ray"
            )
        self.shards = shards if isinstance(shards, ClipShards) else ClipShards(shards)
        self.split = split
        self.clip_shape: tuple[int, int, int, int] = self.shards.clip_shape
        self.num_classes = self.shards.num_classes
        self.index = self.shards.row_index(split)
        self.labels = torch.from_numpy(self.index.label)
        self.video_keys = self.index.video_keys
        self.video_rows = self.index.video_rows()
        self.cache: NodeCache | None = default_cache() if cache is _DEFAULT else cache
        self.backend: Backend = backend or default_backend(self.shards.location)
        self._paths = [files.join(self.shards.root, rel) for rel in self.index.shards]
        self._resident: dict[tuple[int, int], np.ndarray] = {}
        if memory == "all":
            for s, g in self.index.row_groups():
                self._resident[(s, g)] = self._decode(s, g)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def num_videos(self) -> int:
        return len(self.video_keys)

    def epoch_rows(self, seed: int, epoch: int) -> torch.Tensor:
        """One clip per video for this epoch: the per-epoch temporal jitter of SPEC §1.

        Video v's clip is drawn from (seed, epoch, v), so an epoch is one pass over the
        videos whatever the number of stored clips, and resuming at any epoch redraws
        exactly the same clips.
        """
        picks = [
            rows[0] if len(rows) == 1 else rows[derive_seed(seed, "clip", epoch, key) % len(rows)]
            for key, rows in zip(self.video_keys, self.video_rows, strict=True)
        ]
        return torch.as_tensor(np.asarray(picks, dtype=np.int64))

    def batch(
        self, positions: Sequence[int] | torch.Tensor | np.ndarray, *, pin_memory: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips at ``positions`` as one uint8 (B, T, H, W, 3) tensor, and their labels.
        ``pin_memory``: into page-locked memory, so that a ``non_blocking`` copy to a GPU
        returns at once and the next batch is gathered while the GPU trains on this one."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        return self._gather(pos, None, pin_memory), self.labels[torch.from_numpy(pos)]

    def frames(
        self, positions: Sequence[int] | np.ndarray, frames: Sequence[int] | np.ndarray
    ) -> torch.Tensor:
        """Frame ``frames[k]`` of the clip at ``positions[k]``: uint8 (B, H, W, 3), reading
        only those frames' bytes where the node cache holds their row group (static learning
        keeps one frame of a clip)."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        return self._gather(pos, np.asarray(frames, dtype=np.int64).reshape(-1), False)

    @staticmethod
    def _empty(n: int, shape: tuple[int, ...], pin_memory: bool) -> torch.Tensor:
        return torch.empty((n, *shape), dtype=torch.uint8, pin_memory=pin_memory)

    def _gather(
        self,
        pos: np.ndarray,
        frame: np.ndarray | None,
        pin_memory: bool,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        shape = self.clip_shape if frame is None else self.clip_shape[1:]
        out = self._empty(len(pos), shape, pin_memory) if out is None else out
        dest = out.numpy()
        item_bytes = int(np.prod(shape))
        shard, group, row = self.index.shard[pos], self.index.row_group[pos], self.index.row[pos]
        for s, g in sorted(set(zip(shard.tolist(), group.tolist(), strict=True))):
            here = np.flatnonzero((shard == s) & (group == g))
            source = self._source(s, g)
            if not isinstance(source, np.ndarray):
                offsets = row[here] * int(np.prod(self.clip_shape))
                if frame is not None:
                    offsets = offsets + frame[here] * item_bytes
                try:
                    read_into(source, offsets, dest, here)
                    continue
                except FileNotFoundError:  # evicted by another process since: decode it
                    source = self._decode(s, g)
            dest[here] = source[row[here]] if frame is None else source[row[here], frame[here]]
        return out

    def batches(
        self,
        plan: Iterable[Sequence[int] | torch.Tensor],
        *,
        pin_memory: bool = False,
        prefetch: int = 2,
        backend: Backend | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``batch(p)`` for each ``p`` of ``plan``, in order, up to ``prefetch`` batches
        fetched ahead (the window that bounds memory). ``backend="ray"`` reads through a
        Ray Data pipeline (``ray_batches``): same batches, read by tasks across the
        cluster; by default the dataset's ``backend``."""
        if (backend or self.backend) == "ray":
            yield from ray_batches(self, plan, prefetch=prefetch, pin_memory=pin_memory)
            return
        if prefetch <= 0:
            for p in plan:
                yield self.batch(p, pin_memory=pin_memory)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="s2d-prefetch") as pool:
            window = []
            for p in plan:
                # The batch's memory is taken here, in the consumer's thread: buffers
                # allocated by one thread and freed by another fragment glibc's heaps.
                pos = np.asarray(p, dtype=np.int64).reshape(-1)
                out = self._empty(len(pos), self.clip_shape, pin_memory)
                gather = pool.submit(self._gather, pos, None, pin_memory, out)
                window.append((gather, self.labels[torch.from_numpy(pos)]))
                if len(window) > prefetch:
                    gather, labels = window.pop(0)
                    yield gather.result(), labels
            for gather, labels in window:
                yield gather.result(), labels

    def clip_array(self, i: int) -> np.ndarray:
        """Clip ``i`` as a (T, H, W, 3) uint8 array."""
        return self.batch([i])[0][0].numpy()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        frames, labels = self.batch([i])
        return frames[0], int(labels[0])

    def _source(self, s: int, g: int):
        """Row group (s, g) as an array in memory or as a file of the node cache."""
        resident = self._resident.get((s, g))
        if resident is not None:
            return resident
        if self.cache is None:
            return self._decode(s, g)
        key = f"{self.shards.fingerprint}/{self.index.shards[s].removesuffix('.parquet')}-{g:05d}"
        return self.cache.get(key, lambda: self._decode(s, g))

    def _decode(self, s: int, g: int) -> np.ndarray:
        """Fetch and decompress one row group's clips: (rows, T, H, W, 3) uint8."""
        path = self._paths[s]

        def fetch():
            with self.shards.fs.open_input_file(path) as handle:
                return pq.ParquetFile(handle).read_row_group(g, columns=["frames"]).column(0)

        column = files.retrying(self.shards.fs, f"{path} (row group {g})", fetch)
        parts = []
        for chunk in column.chunks:
            _, offsets, data = chunk.buffers()
            offs = np.frombuffer(offsets, dtype=np.int32)[chunk.offset :][: len(chunk) + 1]
            raw = np.frombuffer(data, dtype=np.uint8)[offs[0] : offs[-1]]
            if raw.size != len(chunk) * int(np.prod(self.clip_shape)):
                raise ValueError(
                    f"{path}: row group {g} holds clips of another shape than the manifest's "
                    f"{self.clip_shape}; prepare the dataset again into a new folder"
                )
            parts.append(raw.reshape(len(chunk), *self.clip_shape))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class FrameView(Dataset):
    """Single frames for static (image) learning: item v is one random frame of video v,
    from any of its stored clips (SPEC §1: one random frame per video per access).

    The (clip, frame) pair is drawn from (seed, epoch, v), not from a global RNG, so the same
    epoch yields the same frames whatever the number of DataLoader workers; call
    ``set_epoch`` each epoch.
    """

    def __init__(self, clips: ClipDataset, seed: int = 0) -> None:
        self.clips, self.seed, self.epoch = clips, seed, 0
        self.labels = clips.labels[[int(rows[0]) for rows in clips.video_rows]]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.clips.num_videos

    def source(self, v: int) -> tuple[int, int]:
        """(row, frame) of the clip frame that item ``v`` shows this epoch."""
        rows = self.clips.video_rows[v]
        draw = derive_seed(self.seed, "frame", self.epoch, self.clips.video_keys[v])
        return int(rows[draw % len(rows)]), (draw // len(rows)) % self.clips.clip_shape[0]

    def __getitem__(self, v: int) -> tuple[torch.Tensor, int]:
        frames, labels = self.batch([v])
        return frames[0], int(labels[0])

    def batch(self, items: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``items`` as uint8 (B, H, W, 3) frames and their labels, only those frames
        read."""
        sources = [self.source(int(v)) for v in items]
        rows, frames = zip(*sources, strict=True) if sources else ((), ())
        return self.clips.frames(rows, frames), self.labels[torch.as_tensor(items).long()]


READ_CPUS_ENV = "S2D_READ_CPUS"
_readers: dict[tuple[str, str], ClipDataset] = {}


def ray_batches(
    dataset: ClipDataset,
    plan: Iterable[Sequence[int] | torch.Tensor],
    *,
    prefetch: int = 2,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``dataset.batch(p)`` for each ``p`` of ``plan``, fetched by Ray Data tasks anywhere in
    the cluster: the read is a function of the plan alone, so the batches equal the local
    reader's bit for bit. The plan's batches must share one size (the last may be smaller):
    Ray Data re-batches the stream to it.

    Read tasks ask for ``$S2D_READ_CPUS`` CPUs (default 0): inside a Train worker or a trial
    that holds the node's CPUs, a read that waits for a free CPU would wait for ever.
    """
    import ray
    import ray.data

    from s2d_ray.cluster import init_ray

    plan = [np.asarray(p, dtype=np.int64).reshape(-1) for p in plan]
    if not plan:
        return
    sizes = {len(p) for p in plan[:-1]}
    if len(sizes) > 1 or (sizes and len(plan[-1]) > sizes.pop()):
        raise ValueError("a streamed plan's batches must share one size (the last may be smaller)")
    init_ray()
    plan_ref = ray.put(plan)
    uri, split = dataset.shards.location, dataset.split

    def fetch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        reader = _readers.get((uri, split))
        if reader is None:
            reader = _readers[(uri, split)] = ClipDataset(uri, split)
        positions = np.concatenate([ray.get(plan_ref)[int(k)] for k in batch["batch"]])
        frames, labels = reader.batch(positions)
        return {"frames": frames.numpy(), "label": labels.numpy()}

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not two INFO lines an epoch
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the plan's order is the batches' order
    context.enable_progress_bars = False
    # At most ``prefetch`` + 1 reads at once: the window that bounds memory, and no more
    # worker processes (each imports torch) than the window needs.
    ds = ray.data.from_items([{"batch": k} for k in range(len(plan))]).map_batches(
        fetch,
        batch_size=1,
        num_cpus=float(os.environ.get(READ_CPUS_ENV, 0)),
        compute=ray.data.TaskPoolStrategy(size=max(1, prefetch) + 1),
    )
    for batch in ds.iter_batches(
        batch_size=len(plan[0]), batch_format="numpy", prefetch_batches=prefetch
    ):
        frames = torch.from_numpy(np.ascontiguousarray(batch["frames"]))
        if pin_memory:
            frames = frames.pin_memory()
        yield frames, torch.from_numpy(batch["label"].astype(np.int64))
