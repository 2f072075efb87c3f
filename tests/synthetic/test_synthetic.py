"""Synthetic sets: pairing for many (spc, dpc, vpc), storage against hand counts, save/load."""

from __future__ import annotations

import json

import pytest
import torch

import s2d_ray
from s2d_ray.synthetic import (
    INTEGRATORS,
    NotADistilledSetError,
    S2DMemory,
    SyntheticImages,
    SyntheticVideos,
    create_integrator,
    load_set,
    save_set,
    slot_groups,
)

C, T, H = 3, 4, 16


def memory(spc=2, dpc=2, vpc=1, integrator="conv3d", seed=0) -> S2DMemory:
    gen = torch.Generator().manual_seed(seed)
    static = torch.randn(C * spc, 3, H, H, generator=gen)
    return S2DMemory(static, C, frames=T, vpc=vpc, dpc=dpc, integrator=integrator, generator=gen)


@pytest.mark.parametrize(
    ("count", "vpc", "groups"),
    [
        (2, 1, [[0, 1]]),
        (10, 5, [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]),  # the reference: groups {2k, 2k+1}
        (1, 1, [[0]]),
        (3, 3, [[0], [1], [2]]),
        (3, 2, [[0, 1], [2]]),
        (1, 3, [[0], [0], [0]]),
        (2, 3, [[0], [1], [0]]),
    ],
)
def test_slot_groups(count, vpc, groups):
    assert slot_groups(count, vpc) == groups
    if count >= vpc:  # every memory belongs to exactly one slot
        assert sorted(j for g in groups for j in g) == list(range(count))


@pytest.mark.parametrize(("spc", "dpc", "vpc"), [(2, 2, 1), (1, 1, 1), (10, 10, 5), (1, 2, 1),
                                                 (2, 1, 1), (1, 1, 3), (3, 2, 2)])  # fmt: skip
def test_random_pairing_stays_in_each_slots_groups(spc, dpc, vpc):
    m = memory(spc, dpc, vpc)
    gen = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(60):
        s, d, labels, _ = m.pairs(gen)
        assert len(s) == C * vpc and labels.tolist() == [c for c in range(C) for _ in range(vpc)]
        for n, (si, di) in enumerate(zip(s.tolist(), d.tolist(), strict=True)):
            c, k = divmod(n, vpc)
            assert si - c * spc in slot_groups(spc, vpc)[k]
            assert di - c * dpc in slot_groups(dpc, vpc)[k]
            seen.add((si, di))
    every = m.pairs()  # using the set: every pair of every slot, fixed
    assert set(zip(every[0].tolist(), every[1].tolist(), strict=True)) == seen
    videos, labels = m.materialize()
    assert videos.shape == (len(every[0]), T, 3, H, H) and torch.equal(labels, every[2])


def test_the_reference_rule_is_the_special_case_spc_dpc_twice_vpc():
    m = memory(spc=10, dpc=10, vpc=5)
    s, d, _, _ = m.pairs(torch.Generator().manual_seed(0))
    for n in range(C * 5):
        c, k = divmod(n, 5)
        assert s[n] - c * 10 in (2 * k, 2 * k + 1) and d[n] - c * 10 in (2 * k, 2 * k + 1)
    assert len(m.pairs()[0]) == C * 5 * 4  # 2 x 2 pairs per slot when the set is used


def test_static_only_memory_repeats_the_still_image():
    m = memory(spc=1, dpc=0)
    videos, labels = m.materialize()
    assert videos.shape == (C, T, 3, H, H) and m.integrator is None and labels.tolist() == [0, 1, 2]
    assert all(torch.equal(videos[c, t], m.static[c]) for c in range(C) for t in range(T))
    assert m.storage_bytes() == C * 3 * H * H * 4


def test_integrators_keep_the_shape_and_have_the_documented_sizes():
    sizes = {"conv3d": 327, "conv3d_tconv": 4 * 8 * 27 + 8 + 8 * 3 * 27 + 3}
    assert set(INTEGRATORS) == set(sizes)
    for name, size in sizes.items():
        h = create_integrator(name, torch.Generator().manual_seed(0))
        assert sum(p.numel() for p in h.parameters()) == size
        out = h(torch.randn(2, 3, 16, 12), torch.randn(2, 5, 1, 16, 12))
        assert out.shape == (2, 5, 3, 16, 12)
        again = create_integrator(name, torch.Generator().manual_seed(0))
        assert all(
            torch.equal(a, b) for a, b in zip(h.parameters(), again.parameters(), strict=True)
        )
    with pytest.raises(ValueError, match="unknown integrator"):
        create_integrator("mlp")


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
def test_an_identity_integrator_starts_from_the_still_image(name):
    """init="identity": with a zero dynamic map the video is the still image repeated, any
    image (negative values through the ReLU of conv3d_tconv too); the dynamic map still
    reaches the video, so the dynamic memory has a gradient from the first step."""
    gen = torch.Generator().manual_seed(0)
    h = create_integrator(name, gen, init="identity")
    still = torch.randn(2, 3, 16, 12, generator=gen) * 3
    blank = torch.zeros(2, 5, 1, 16, 12)
    expected = still.unsqueeze(1).expand(-1, 5, -1, -1, -1)
    assert torch.allclose(h(still, blank), expected, atol=1e-6)
    dynamic = torch.randn(2, 5, 1, 16, 12, generator=gen, requires_grad=True)
    video = h(still, dynamic)
    assert not torch.allclose(video, expected, atol=1e-3)
    video.square().sum().backward()
    assert dynamic.grad.abs().sum() > 0
    default = create_integrator(name, torch.Generator().manual_seed(0))
    assert not torch.allclose(default(still, blank), expected, atol=0.1)  # the reference's
    with pytest.raises(ValueError, match="unknown integrator init"):
        create_integrator(name, init="zeros")


@pytest.mark.parametrize("method", ["s2d-dm", "s2d-mtt", "s2d-frepo"])
def test_every_s2d_method_builds_its_memory_with_the_asked_init(method):
    from types import SimpleNamespace

    from s2d_ray.methods import METHODS
    from s2d_ray.methods.init import build_memory

    static = SyntheticImages(torch.randn(C, 3, H, H), C)
    real = SimpleNamespace(
        num_classes=C, clip_shape=(T, 3, H, H), shards=SimpleNamespace(fingerprint="x")
    )
    context = SimpleNamespace(
        static=static, real=real, static_manifest={}, seed=0, ipc=1, device=torch.device("cpu")
    )
    config = METHODS[method].Config
    assert config().integrator_init == "default"  # the reference's
    memory = build_memory(config(integrator_init="identity", dpc=1), context)
    with torch.no_grad():
        memory.dynamic.zero_()
    videos, _ = memory.materialize()
    assert torch.allclose(videos, static.items.unsqueeze(1).expand(-1, T, -1, -1, -1), atol=1e-6)


def test_storage_bytes_match_hand_counts():
    m = memory(spc=2, dpc=2, vpc=1)
    static, dynamic, h = C * 2 * 3 * H * H, C * 2 * T * H * H, 327
    assert m.storage_bytes() == 4 * (static + dynamic + h)
    assert m.storage_bytes("float16") == 2 * (static + dynamic + h)
    videos = SyntheticVideos(torch.zeros(C * 2, T, 3, H, H), C)
    assert videos.storage_bytes() == 4 * C * 2 * T * 3 * H * H
    images = SyntheticImages(torch.zeros(C * 2, 3, H, H), C)
    assert images.storage_bytes() == 4 * C * 2 * 3 * H * H


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_save_load_round_trip(tmp_path, dtype):
    for synthetic in (memory(2, 2, 1), memory(1, 0, 1), memory(1, 1, 2, "conv3d_tconv"),
                      SyntheticVideos(torch.randn(C, T, 3, H, H), C)):  # fmt: skip
        path = tmp_path / f"{synthetic.kind}-{dtype}-{len(list(tmp_path.iterdir()))}"
        meta = {"method": "test", "dataset": {"classes": ["a", "b", "c"], "fingerprint": "f"}}
        stale = {"bytes": -1, "storage_dtype": "int8", "kind": "other"}  # e.g. a copied manifest
        manifest = save_set(synthetic, path, {**stale, **meta}, dtype=dtype)
        assert manifest["bytes"] == synthetic.storage_bytes(dtype)
        assert manifest["storage_dtype"] == dtype and manifest["kind"] == synthetic.kind
        assert json.loads((path / "manifest.json").read_text())["kind"] == synthetic.kind
        loaded, m = load_set(path)
        assert type(loaded) is type(synthetic) and m["method"] == "test"
        for name, t in synthetic.stored_tensors().items():
            expected = t.half().float() if dtype == "float16" else t
            assert torch.equal(loaded.stored_tensors()[name], expected), name
        data = s2d_ray.load_distilled(path)
        video, label = data[0]
        assert video.shape == (T, 3, H, H) and label == 0 and data.classes == ["a", "b", "c"]
        assert len(data) == len(synthetic.materialize()[1])


def test_load_refuses_what_is_not_a_distilled_set(tmp_path):
    with pytest.raises(NotADistilledSetError, match="no manifest.json.*s2d distill"):
        s2d_ray.load_distilled(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(NotADistilledSetError, match="not a s2d-ray-distilled manifest"):
        s2d_ray.load_distilled(tmp_path)
    good = tmp_path / "good"
    save_set(memory(), good, {})
    raw = bytearray((good / "tensors.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (good / "tensors.safetensors").write_bytes(bytes(raw))
    with pytest.raises(NotADistilledSetError, match="checksum"):
        s2d_ray.load_distilled(good)


def test_materialize_gradients_reach_only_dynamic_and_integrator():
    m = memory(2, 2, 1)
    videos, _ = m.materialize(torch.Generator().manual_seed(0))
    videos.square().mean().backward()
    assert m.static.grad is None and not m.static.requires_grad
    assert m.dynamic.grad is not None and m.dynamic.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.integrator.parameters())
