"""The expert farm: N independent experts trained by W Ray Train workers, into one store.

Experts are independent, not data-parallel: worker r trains the experts i with
``i % W == r`` among those not yet complete, each on the whole training set, which each
worker streams from the shards a batch at a time (through its node's cache of decoded
clips): a worker's memory does not grow with the dataset.

The trajectory store is the source of truth and the checkpoint: finished experts are
skipped, a half-trained one resumes after its last snapshot, and when a worker dies Ray
Train restarts the worker group (``FailureConfig``), which re-runs the same loop and so
finishes exactly N complete experts. The share of each worker is recomputed from the group's
size at every start, so an elastic group (``min_workers``) that restarts smaller after losing
a node trains the lost worker's experts too. MLflow gets a parent run per farm and a child run per
expert; tracking failures never stop the farm.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

import torch
from pydantic import Field, field_validator, model_validator

from s2d_ray.cluster import init_ray, worker_runtime_env
from s2d_ray.config import StrictConfig, absolute_uri, config_fingerprint
from s2d_ray.data.clips import ClipDataset
from s2d_ray.data.stream import ClipShards
from s2d_ray.experts.store import ExpertInfo, TrajectoryStore
from s2d_ray.experts.training import (
    ExpertConfig,
    is_trained,
    train_expert,
    trajectory_settings,
)
from s2d_ray.files import join, ray_storage
from s2d_ray.models import resolve_device
from s2d_ray.progress import Progress
from s2d_ray.tracking import Tracker, TrackingConfig, shared_store


class FarmConfig(StrictConfig):
    data: str = Field(description="clip shard directory (path or URI)")
    out: str = Field(description="trajectory store (path or URI)")
    num_experts: int = Field(ge=1)
    workers: int = Field(default=1, ge=1)
    min_workers: int | None = Field(
        default=None,
        ge=1,
        description="elastic: after a lost node the group restarts with as few as this many "
        "workers rather than wait for a replacement (None: always ``workers``)",
    )
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    max_failures: int = Field(default=3, ge=0)
    expert: ExpertConfig = ExpertConfig()

    _absolute = field_validator("data", "out")(absolute_uri)

    @model_validator(mode="after")
    def _elastic_range(self) -> FarmConfig:
        if self.min_workers is not None and self.min_workers > self.workers:
            raise ValueError(
                f"min_workers ({self.min_workers}) is more than workers ({self.workers})"
            )
        return self

    def worker_range(self, experts_left: int) -> int | tuple[int, int]:
        """Ray Train's ``num_workers``: fixed, or a (min, max) range for an elastic group.
        Never more workers than experts left to train."""
        most = min(self.workers, experts_left)
        if self.min_workers is None or self.min_workers >= most:
            return most
        return (self.min_workers, most)

    def run_key(self, dataset_fingerprint: str) -> str:
        """Stable id of this farm: the same command resumes the same Train and MLflow runs."""
        return config_fingerprint(
            {
                "out": self.out,
                "data": dataset_fingerprint,
                "expert": self.expert.model_dump(mode="json"),
            }
        )


def assigned_experts(todo: list[int], rank: int, world: int) -> list[int]:
    return [e for k, e in enumerate(todo) if k % world == rank]


def worker_device(gpus_per_worker: float) -> torch.device:
    """The worker's GPU, or the CPU where none is visible (a share of a logical GPU that a
    node declares without having one trains on its CPU rather than failing)."""
    if gpus_per_worker > 0 and torch.cuda.is_available():
        import ray.train.torch

        return ray.train.torch.get_device()
    return resolve_device("cpu")


def farm_worker_loop(loop_config: dict) -> None:
    """Ray Train per-worker function: train this rank's share of the unfinished experts."""
    import ray
    import ray.train

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    config = FarmConfig.model_validate(loop_config["farm"])
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    # Each worker reads the shards where they are, a batch at a time (through its node's
    # cache): nothing of the dataset is pinned in the object store for the farm's life.
    train = ClipDataset(loop_config["data"], "train")
    test = ClipDataset(loop_config["data"], "test")
    store = TrajectoryStore(
        config.out,
        settings=loop_config["settings"],
        dataset_fingerprint=loop_config["dataset_fingerprint"],
    )
    tracker = Tracker(TrackingConfig(**loop_config["tracking"]))
    device = worker_device(config.gpus_per_worker)
    for expert_id in assigned_experts(loop_config["todo"], rank, world):
        train_one(
            expert_id,
            config,
            train,
            test,
            store,
            tracker,
            device,
            parent_run_id=loop_config["parent_run_id"],
            run_key=loop_config["run_key"],
        )


def train_one(
    expert_id: int,
    config: FarmConfig,
    train: ClipDataset,
    test: ClipDataset,
    store: TrajectoryStore,
    tracker: Tracker,
    device: torch.device,
    *,
    parent_run_id: str | None,
    run_key: str,
) -> ExpertInfo:
    """Train one expert with its MLflow child run; usable outside Ray (tests, one-off runs)."""
    expert = config.expert
    tags = {"s2d.role": "expert", "s2d.expert_id": expert_id}
    with tracker.start_run(
        f"expert-{expert_id:04d}",
        parent_run_id=parent_run_id,
        tags=tags,
        resume_key=f"farm/{run_key}/expert-{expert_id}",
    ) as run:
        run.log_params(
            {
                "expert_id": expert_id,
                "seed": expert.expert_seed(expert_id),
                "store": config.out,
                "device": str(device),
                **expert.model_dump(mode="json"),
            }
        )

        def on_epoch(eid: int, epoch: int, metrics: dict[str, float]) -> None:
            # epoch 0 is the untrained network's evaluation: no training loss to show
            known = {k: v for k, v in metrics.items() if v == v}
            run.log_metrics(known, step=epoch)
            shown = " ".join(f"{k}={v:.4g}" for k, v in known.items())
            what = "untrained" if epoch == 0 else f"epoch {epoch}/{expert.num_epochs}"
            print(f"[expert {eid}] {what}: {shown}", flush=True)

        info = train_expert(expert_id, expert, train, test, store, device=device, on_epoch=on_epoch)
        run.set_tags({"s2d.expert_path": info.path})
        return info


@dataclass
class FarmSummary:
    store: str
    experts: list[ExpertInfo]
    trained: list[int]
    seconds: float
    parent_run_id: str | None


def run_farm(config: FarmConfig, tracking: TrackingConfig, *, progress: bool = True) -> FarmSummary:
    """Train every missing expert of ``config`` with Ray Train; returns the store's experts.
    Its workers log each epoch; on an sqlite store they do so through a local server."""
    started = time.perf_counter()
    shards = ClipShards(config.data)
    config = config.model_copy(update={"expert": config.expert.for_data(shards)})
    settings = trajectory_settings(config.expert, shards)
    store = TrajectoryStore(config.out, settings=settings, dataset_fingerprint=shards.fingerprint)
    todo = _unfinished(store, config)
    run_key = config.run_key(shards.fingerprint)
    tracker = Tracker(tracking)
    with tracker.start_run(
        "farm", tags={"s2d.role": "farm"}, resume_key=f"farm/{run_key}"
    ) as parent:
        parent.log_params(
            {
                "num_experts": config.num_experts,
                "workers": config.workers,
                "store": config.out,
                "data": config.data,
                "gpus_per_worker": config.gpus_per_worker,
            }
        )
        parent.log_input_manifest(
            shards.manifest,
            name=shards.manifest["dataset"],
            digest=shards.fingerprint,
            source=config.data,
        )
        workers = min(config.workers, len(todo))
        if todo:
            init_ray()
            with shared_store(tracking, workers) as workers_tracking:
                trainer = _trainer(config, shards, settings, workers_tracking, parent, todo)
                with _Progress(store, config, enabled=progress):
                    trainer.fit()
        store.refresh()  # re-read what the workers wrote
        experts = store.experts(complete_only=True)
        missing = _unfinished(store, config)
        if missing:
            raise RuntimeError(
                f"farm ended with experts {missing} incomplete in {config.out}; "
                "re-run the same command to resume them"
            )
        parent.log_metrics({"experts_complete": len(experts)})
        return FarmSummary(config.out, experts, todo, time.perf_counter() - started, parent.run_id)


def _trainer(config, shards, settings, tracking, parent, todo: list[int]):
    """Ray Train's worker group: one expert after another on each of ``workers`` workers."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run_key = config.run_key(shards.fingerprint)
    loop_config = {
        "farm": config.model_dump(mode="json"),
        "data": shards.location,
        "settings": settings,
        "dataset_fingerprint": shards.fingerprint,
        "tracking": asdict(tracking),
        "parent_run_id": parent.run_id,
        "run_key": run_key,
        "todo": todo,
    }
    storage_path, storage_fs = ray_storage(_train_storage(config))
    resources = {"CPU": config.cpus_per_worker}
    if config.gpus_per_worker:
        resources["GPU"] = config.gpus_per_worker
    return TorchTrainer(
        farm_worker_loop,
        train_loop_config=loop_config,
        # The experts train apart, with no collective: gloo works on any node, where
        # NCCL (Ray's choice with GPUs) fails on one whose GPU is only declared.
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(
            num_workers=config.worker_range(len(todo)),
            use_gpu=config.gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=f"farm-{run_key}",
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=config.max_failures),
            worker_runtime_env=worker_runtime_env(),  # also when Ray was up before
        ),
    )


def _unfinished(store: TrajectoryStore, config: FarmConfig) -> list[int]:
    return [i for i in range(config.num_experts) if not is_trained(store.expert(i), config.expert)]


def _train_storage(config: FarmConfig) -> str:
    """Ray Train's run folder sits inside the store (``_train/``), which lists experts only."""
    return join(config.out, "_train")  # out is absolute or a URI (FarmConfig makes it so)


class _Progress:
    """Driver-side progress read from the store (the workers' single source of truth)."""

    def __init__(self, store: TrajectoryStore, config: FarmConfig, enabled: bool) -> None:
        self.store, self.config, self.enabled = store, config, enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    def _run(self) -> None:
        total = self.config.num_experts * self.config.expert.num_epochs
        bar = None
        while True:
            stopping = self._stop.is_set()  # one last read after the farm ends
            experts = self.store.experts(complete_only=False)
            done = sum(min(e.epochs_completed, self.config.expert.num_epochs) for e in experts)
            complete = f"{sum(e.complete for e in experts)}/{self.config.num_experts}"
            if bar is None:  # counted from what an earlier run left
                bar = Progress(total, "experts", unit="epoch", start=done)
            if done > bar.done:
                bar.update(done - bar.done, complete=complete)
            if stopping:
                bar.close()
                return
            self._stop.wait(2.0)
