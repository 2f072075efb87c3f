"""Every entry of MODELS is exercised, so a new registration is covered without editing tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from nets import LARGE, SMALL, build

import s2d_ray.models as models_pkg
from s2d_ray.models import MODELS, create, flatten_params, functional_forward, register_model
from s2d_ray.models.convnet3d import ConvNet3D
from s2d_ray.models.recurrent import ConvRecurrent, recurrent_params

NAMES = sorted(MODELS)


def make_input(model: torch.nn.Module, clip_shape, batch: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    shape = clip_shape if model.input_kind == "clip" else clip_shape[1:]
    return torch.randn(batch, *shape, generator=gen)


@pytest.mark.parametrize("clip_shape", [SMALL, LARGE], ids=["8x64", "16x112"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_and_embed_shapes(name, clip_shape):
    model = build(name, num_classes=5, clip_shape=clip_shape, seed=0).eval()
    assert model.input_kind in ("clip", "image")
    assert model.num_classes == 5
    x = make_input(model, clip_shape)
    with torch.inference_mode():
        logits, emb = model(x), model.embed(x)
    assert logits.shape == (2, 5)
    assert emb.shape == (2, model.embed_dim)
    assert torch.isfinite(logits).all() and torch.isfinite(emb).all()


@pytest.mark.parametrize(("clip_shape", "embed_dim"), [(SMALL, 256), (LARGE, 2048)])
def test_convnet3d_size_matches_spec(clip_shape, embed_dim):
    model = create("convnet3d", num_classes=50, clip_shape=clip_shape)
    assert sum(p.numel() for p in model.parameters()) == 3_647_666
    assert model.embed_dim == embed_dim
    assert not any(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in model.modules())


@pytest.mark.parametrize("name", NAMES)
def test_backward_gives_finite_grads_everywhere(name):
    model = build(name, num_classes=4, clip_shape=SMALL, seed=1).train()
    x = make_input(model, SMALL)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 3])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_seeded_init_is_reproducible_and_private(name):
    def weights(seed):
        return [
            p.detach() for p in build(name, num_classes=3, clip_shape=SMALL, seed=seed).parameters()
        ]

    before = torch.get_rng_state()
    a, b, c = weights(7), weights(7), weights(8)
    assert torch.equal(torch.get_rng_state(), before), "seeded create touched the global RNG"
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    random_params = [i for i, p in enumerate(a) if p.std() > 0]  # norms init to 1/0
    assert random_params
    assert all(not torch.equal(a[i], c[i]) for i in random_params)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_shape_names_expected_shape(name):
    model = build(name, num_classes=3, clip_shape=SMALL)
    good = make_input(model, SMALL, batch=1)
    bad_inputs = [
        good[..., :32, :32],
        good.unsqueeze(0),
        good[:, :, :1] if good.ndim == 5 else good[:, :1],
    ]
    for bad in bad_inputs:
        with pytest.raises(ValueError, match=r"expects input of shape .*got"):
            model(bad)
        with pytest.raises(ValueError, match=r"expects input of shape"):
            model.embed(bad)


def test_image_net_given_a_clip_hints_at_folding_time():
    model = create("convnet", num_classes=3, clip_shape=SMALL)
    with pytest.raises(ValueError, match=r"flatten\(0, 1\)"):
        model(torch.zeros(1, *SMALL))


@pytest.mark.parametrize(
    "clip_shape", [(4, 3, 64, 64), (8, 3, 16, 16), (8, 3, 96, 96)], ids=["T4", "H16", "H96"]
)
def test_convnet3d_rejects_clips_too_small_for_its_pools(clip_shape):
    with pytest.raises(ValueError, match=r"ConvNet3D cannot take clips of shape \(T, 3, H, W\)"):
        create("convnet3d", num_classes=3, clip_shape=clip_shape)


# ConvNet3D's CPU layout policy: (ATen's CPU capability, graph) -> blocks run channels-last
LAYOUTS = {("AVX512", True): 3, ("AVX512", False): 3, ("AVX2", True): 0, ("AVX2", False): 1}


@pytest.mark.parametrize(("capability", "graph"), sorted(LAYOUTS))
def test_convnet3d_cpu_layouts_compute_what_nchw_does(monkeypatch, capability, graph):
    """Whichever blocks run channels-last on this CPU, the logits and weight gradients are
    those of NCHW throughout (the layout only picks oneDNN's kernels)."""
    model = create("convnet3d", num_classes=4, clip_shape=SMALL, seed=0).eval()
    x, y = make_input(model, SMALL, batch=3), torch.tensor([0, 1, 3])
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)

    def run():
        model.zero_grad()
        with torch.set_grad_enabled(graph):
            logits = model(x)
            if graph:
                torch.nn.functional.cross_entropy(logits, y).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()] if graph else []

    with torch.set_grad_enabled(graph):
        assert model._channels_last_blocks(x) == LAYOUTS[capability, graph]
    logits, grads = run()
    monkeypatch.setattr(ConvNet3D, "_channels_last_blocks", lambda self, x: 0)
    nchw_logits, nchw_grads = run()
    torch.testing.assert_close(logits, nchw_logits, rtol=1e-4, atol=1e-5)
    for grad, nchw in zip(grads, nchw_grads, strict=True):
        torch.testing.assert_close(grad, nchw, rtol=1e-3, atol=1e-5)


def test_convnet3d_with_weights_not_its_own_stays_nchw(monkeypatch):
    """MTT's student and vmap's stacked repeats call it with outside weights: NCHW (vmap
    takes no channels-last tensor), whatever the CPU."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    model = create("convnet3d", num_classes=4, clip_shape=SMALL, seed=0)
    policy, chosen = ConvNet3D._channels_last_blocks, []

    def recorded(self, x):
        chosen.append(policy(self, x))
        return chosen[-1]

    monkeypatch.setattr(ConvNet3D, "_channels_last_blocks", recorded)
    model(make_input(model, SMALL))
    functional_forward(model, flatten_params(model).requires_grad_(True), make_input(model, SMALL))
    assert chosen == [3, 0]


@pytest.mark.parametrize("name", ["convnet", "convnetd4", "convnet_gru"])
def test_2d_trunks_reject_too_small_images(name):
    with pytest.raises(ValueError, match="too small"):
        build(name, num_classes=3, clip_shape=(8, 3, 4, 4))


@pytest.mark.parametrize("clip_shape", [(8, 1, 64, 64), (8, 3, 64), (8, 3, 0, 64)])
def test_bad_clip_shape_argument(clip_shape):
    with pytest.raises(ValueError, match="clip_shape"):
        create("convnet3d", num_classes=3, clip_shape=clip_shape)


def test_unknown_name_lists_registered_models():
    with pytest.raises(ValueError, match="unknown model 'resnet9000'") as err:
        create("resnet9000", num_classes=3, clip_shape=SMALL)
    for name in MODELS:
        assert name in str(err.value)


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        create("convnet", num_classes=0, clip_shape=SMALL)


def test_register_model_rejects_duplicates_and_new_entries_are_creatable():
    with pytest.raises(ValueError, match="already registered"):
        register_model("convnet3d")(lambda **kw: None)
    try:
        register_model("_tiny_test_net")(
            lambda *, num_classes, clip_shape: torch.nn.Linear(clip_shape[-1], num_classes)
        )
        net = create("_tiny_test_net", num_classes=2, clip_shape=SMALL, seed=3)
        assert net.out_features == 2
    finally:
        MODELS.pop("_tiny_test_net", None)


def test_convnet_options():
    bn = create("convnet", num_classes=3, clip_shape=SMALL, norm="batchnorm", width=16, depth=2)
    assert bn.embed_dim == 16 * 16 * 16
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    plain = create("convnet", num_classes=3, clip_shape=SMALL, norm="none", width=8)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in plain.modules())
    inorm = create("convnet", num_classes=3, clip_shape=SMALL)
    groups = [m for m in inorm.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(groups) == 3 and all(g.num_groups == g.num_channels == 128 for g in groups)
    assert create("convnetd4", num_classes=3, clip_shape=LARGE).embed_dim == 128 * 7 * 7
    with pytest.raises(ValueError, match="unknown norm"):
        create("convnet", num_classes=3, clip_shape=SMALL, norm="layer")


@pytest.mark.parametrize(
    ("cell", "clip_shape", "frame_dim", "hidden"),
    [
        ("gru", SMALL, 8192, 1024),  # the reference's nets at 64x64: depth 3, hidden f/8, f
        ("lstm", SMALL, 8192, 8192),
        ("gru", LARGE, 6272, 784),  # 112x112: depth 4 (7x7x128 features)
        ("lstm", LARGE, 6272, 6272),
    ],
)
def test_recurrent_default_is_the_reference_sizing(cell, clip_shape, frame_dim, hidden):
    with torch.device("meta"):  # exact sizes without allocating half a billion weights
        model = ConvRecurrent(10, clip_shape, cell=cell)
    assert model.rnn.input_size == frame_dim and model.embed_dim == hidden
    rnn_size = sum(p.numel() for p in model.rnn.parameters())
    assert rnn_size == recurrent_params(cell, frame_dim, hidden)
    assert model.aggregate == "mean" and model.classifier.in_features == hidden
    with pytest.raises(ValueError, match=r"5\.0\d?e\+09 parameters.*hidden="):
        ConvRecurrent(10, LARGE, cell="lstm", depth=3)  # the reference rule at depth 3


def test_recurrent_mean_aggregate_averages_outputs_over_time():
    model = create("convnet_gru", num_classes=3, clip_shape=SMALL, hidden=8, width=8, seed=0)
    last = create(
        "convnet_gru", num_classes=3, clip_shape=SMALL, hidden=8, width=8, seed=0, aggregate="last"
    )
    x = torch.randn(2, 8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        per_frame = model.trunk(x.flatten(0, 1)).flatten(1).unflatten(0, (2, 8))
        outputs, h_n = model.rnn(per_frame)
        assert torch.allclose(model.embed(x), outputs.mean(1))
        assert torch.allclose(last.embed(x), h_n[-1])
    with pytest.raises(ValueError, match="aggregate"):
        create("convnet_gru", num_classes=3, clip_shape=SMALL, aggregate="max")


def test_recurrent_nets_accept_other_clip_lengths():
    model = create("convnet_lstm", num_classes=3, clip_shape=SMALL, hidden=32, width=16)
    assert model.embed_dim == 32
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 3, 64, 64)).shape == (2, 3)


def test_no_torchvision_and_no_hardcoded_cuda():
    assert "torchvision" not in sys.modules
    for path in Path(models_pkg.__file__).parent.glob("*.py"):
        assert ".cuda(" not in path.read_text(), path
