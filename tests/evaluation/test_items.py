"""What an epoch of the protocol trains on: an S2D memory's pairs re-drawn per epoch with H run
once, every pair when asked, still images repeated over time."""

from __future__ import annotations

import torch

from s2d_ray.evaluation import EvalConfig, epoch_draw, evaluate_synthetic
from s2d_ray.evaluation.items import as_videos
from s2d_ray.synthetic import S2DMemory, SyntheticImages


def memory(spc=2, dpc=2, vpc=1, classes=3):
    gen = torch.Generator().manual_seed(0)
    static = torch.randn(classes * spc, 3, 8, 8, generator=gen)
    return S2DMemory(static, classes, frames=4, vpc=vpc, dpc=dpc, generator=gen)


def count_h_calls(m: S2DMemory) -> list[int]:
    calls = []
    m.integrator.register_forward_hook(lambda mod, args, out: calls.append(len(args[0])))
    return calls


def test_pairs_are_redrawn_each_epoch_one_per_slot_with_h_once():
    m = memory()
    calls = count_h_calls(m)
    draw, count = epoch_draw(m, 4, pairs="redraw", seed=1)
    assert count == 3  # C * vpc items per epoch, as a plain set of 3 videos
    epochs = [draw(e) for e in range(6)]
    assert calls == [3] * 6  # H once per epoch, batched over all slots
    assert all(items.shape == (3, 4, 3, 8, 8) for items, _ in epochs)
    assert all(labels.tolist() == [0, 1, 2] for _, labels in epochs)
    distinct = {items.numpy().tobytes() for items, _ in epochs}
    assert len(distinct) > 1  # other pairs on other epochs
    again, _ = epoch_draw(m, 4, pairs="redraw", seed=1)
    assert torch.equal(again(3)[0], epochs[3][0])  # seeded by (seed, epoch)
    every, _ = as_videos(m, 4)
    stacked = torch.stack([v for v in every])
    for items, _ in epochs:  # each drawn video is one of the memory's pairs
        assert all(any(torch.allclose(v, w) for w in stacked) for v in items)


def test_all_pairs_when_asked_and_one_to_one_memories_are_the_same_either_way():
    m = memory()
    draw, count = epoch_draw(m, 4, pairs="all")
    assert count == 12 and torch.equal(draw(0)[0], draw(5)[0])  # 2 x 2 pairs per slot, fixed
    one = memory(spc=1, dpc=1)
    redraw, n = epoch_draw(one, 4, pairs="redraw")
    fixed, k = epoch_draw(one, 4, pairs="all")
    assert n == k == 3 and torch.equal(redraw(2)[0], fixed(0)[0])


def test_still_images_are_repeated_over_the_clip():
    images = SyntheticImages(torch.randn(6, 3, 8, 8), 3)
    draw, count = epoch_draw(images, 4)
    items, labels = draw(0)
    assert count == 6 and items.shape == (6, 4, 3, 8, 8)
    assert torch.equal(items[:, 0], items[:, 3]) and labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_a_static_memory_is_evaluated_as_stills_over_time(embedded_small):
    from s2d_ray.data import ClipDataset

    val = ClipDataset(embedded_small, "val")
    images = SyntheticImages(torch.randn(10, 3, 64, 64), 10)
    result = evaluate_synthetic(images, val, EvalConfig(epochs=1, repeats=1))
    assert result.split == "val" and result.train_items == 10
