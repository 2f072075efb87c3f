"""Static and dynamic class groups (SPEC §5), computed once per dataset and cached by the shards.

A 4-layer 2-D ConvNet is trained by us on the dataset's real frames (no weights can be
downloaded). Its features of every frame are binarised (above the feature's median over all
frames); a clip's motion score is the mean Hamming distance between consecutive frames'
codes; a class's score is the mean over its clips. The lower half of the classes is
"static", the upper half "dynamic".
"""

from __future__ import annotations

import torch

from s2d_ray import files
from s2d_ray.data.clips import ClipDataset, FrameView
from s2d_ray.data.stream import ClipShards, ClipTransform
from s2d_ray.models import create
from s2d_ray.models.step import train_step
from s2d_ray.seeding import derive_seed, torch_generator

VERSION = 1


def class_groups(
    shards: ClipShards,
    *,
    seed: int = 0,
    epochs: int = 3,
    clips_per_class: int = 16,
    device: torch.device | str = "cpu",
) -> dict:
    """{"static": [labels], "dynamic": [labels], "scores": [per-class Hamming distance]}."""
    cache = files.join(shards.root, f"class-groups-seed{seed}.json")
    if files.exists(shards.fs, cache):
        cached = files.read_json(shards.fs, cache)
        if cached.get("fingerprint") == shards.fingerprint and cached.get("version") == VERSION:
            return cached
    device = torch.device(device)
    train = ClipDataset(shards, "train")
    net = _frame_network(train, shards, seed, epochs, device)
    scores = _motion_scores(net, train, clips_per_class, seed, device)
    order = sorted(range(len(scores)), key=lambda c: scores[c])
    half = len(order) // 2
    result = {
        "version": VERSION,
        "fingerprint": shards.fingerprint,
        "seed": seed,
        "scores": scores,
        "static": sorted(order[:half]),
        "dynamic": sorted(order[half:]),
    }
    files.write_json(shards.fs, cache, result)
    return result


def _frame_network(train, shards, seed, epochs, device) -> torch.nn.Module:
    t, h, w, c = shards.clip_shape
    net = create(
        "convnet",
        num_classes=shards.num_classes,
        clip_shape=(t, c, h, w),
        depth=4,
        seed=derive_seed(seed, "groups-net"),
    ).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    frames = FrameView(train, seed=derive_seed(seed, "groups-frames"))
    transform = ClipTransform(standardize=False)
    order = torch_generator(seed, "groups-order")
    net.train()
    for epoch in range(epochs):
        frames.set_epoch(epoch)
        perm = torch.randperm(len(frames), generator=order)
        for start in range(0, len(perm), 64):
            images, labels = frames.batch(perm[start : start + 64])
            x, y = transform(images, device=device), labels.to(device)
            train_step(net, optimizer, x, y)
    return net.eval()


@torch.no_grad()
def _motion_scores(net, train, clips_per_class, seed, device) -> list[float]:
    transform = ClipTransform(standardize=False)
    gen = torch_generator(seed, "groups-clips")
    codes, labels = [], []
    for c in range(train.num_classes):
        pool = torch.nonzero(train.labels == c).flatten()
        pick = pool[torch.randperm(len(pool), generator=gen)[:clips_per_class]]
        clips = transform(train.batch(pick)[0], device=device)  # (n, T, 3, H, W)
        feats = net.embed(clips.flatten(0, 1)).unflatten(0, clips.shape[:2]).cpu()
        codes.append(feats)
        labels += [c] * len(pick)
    feats = torch.cat(codes)  # (N, T, D)
    bits = feats > feats.flatten(0, 1).median(0).values
    per_clip = (bits[:, 1:] != bits[:, :-1]).float().mean(dim=(1, 2))
    labels_t = torch.tensor(labels)
    return [float(per_clip[labels_t == c].mean()) for c in range(train.num_classes)]
