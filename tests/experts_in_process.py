"""Training small expert stores in-process (no Ray), for tests that need trajectories."""

from __future__ import annotations


def train_experts(
    data: str, out: str, *, num_experts: int = 1, epochs: int = 1, batch_size: int = 10
) -> str:
    """Experts in batches of ``batch_size``: on the small embedded set (40 videos) 10 takes 4
    steps per epoch, so that a student of a few steps can follow an epoch, as MiniUCF's
    experts take 18 steps (4662 clips, batches of 256) against the student's 10."""
    from s2d_ray.data import ClipDataset, ClipShards
    from s2d_ray.experts.store import TrajectoryStore
    from s2d_ray.experts.training import ExpertConfig, train_expert, trajectory_settings

    shards = ClipShards(data)
    config = ExpertConfig(epochs=epochs, batch_size=batch_size).for_data(shards)
    store = TrajectoryStore(
        out, settings=trajectory_settings(config, shards), dataset_fingerprint=shards.fingerprint
    )
    train, test = ClipDataset(shards, "train"), ClipDataset(shards, "test")
    for expert_id in range(num_experts):
        train_expert(expert_id, config, train, test, store)
    return out
