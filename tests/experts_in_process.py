"""Training small expert stores in-process (no Ray), for tests that need trajectories."""

from __future__ import annotations


def train_experts(data: str, out: str, *, num_experts: int = 1, epochs: int = 1) -> str:
    from s2d_ray.data import ArrowClipDataset, ClipShards
    from s2d_ray.experts.store import TrajectoryStore
    from s2d_ray.experts.training import ExpertConfig, train_expert, trajectory_settings

    shards = ClipShards(data)
    config = ExpertConfig(epochs=epochs, batch_size=64).for_data(shards)
    store = TrajectoryStore(
        out, settings=trajectory_settings(config, shards), dataset_fingerprint=shards.fingerprint
    )
    train, test = ArrowClipDataset(shards, "train"), ArrowClipDataset(shards, "test")
    for expert_id in range(num_experts):
        train_expert(expert_id, config, train, test, store)
    return out
