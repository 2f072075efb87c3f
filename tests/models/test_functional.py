"""The flat-parameter path must be numerically the module itself, gradients included."""

from __future__ import annotations

import contextlib

import pytest
import torch
from nets import SMALL, build

from s2d_ray.models import (
    MODELS,
    autocast_context,
    create,
    flatten_params,
    fp32_math_context,
    functional_forward,
    param_shapes,
    unflatten,
)

NAMES = sorted(MODELS)


def small_model_and_input(name, seed=0):
    model = build(name, num_classes=4, clip_shape=SMALL, seed=seed)
    shape = SMALL if model.input_kind == "clip" else SMALL[1:]
    return model, torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
def test_functional_forward_and_grads_match_module(name):
    model, x = small_model_and_input(name)
    model.eval()
    x.requires_grad_(True)
    params = list(model.parameters())
    for method in ("forward", "embed"):
        ref = getattr(model, method)(x)
        *ref_param_grads, ref_x_grad = torch.autograd.grad(
            ref.square().sum(), [*params, x], allow_unused=True
        )
        ref_flat_grad = torch.cat(  # embed leaves the classifier without a grad: zero there
            [
                (torch.zeros_like(p) if g is None else g).reshape(-1)
                for p, g in zip(params, ref_param_grads, strict=True)
            ]
        )

        flat = flatten_params(model).requires_grad_(True)
        out = functional_forward(model, flat, x, method=method)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        flat_grad, x_grad = torch.autograd.grad(out.square().sum(), (flat, x))
        torch.testing.assert_close(flat_grad, ref_flat_grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(x_grad, ref_x_grad, rtol=1e-4, atol=1e-6)


def test_functional_forward_uses_flat_not_module_params():
    model, x = small_model_and_input("convnet3d")
    model.eval()
    flat = flatten_params(model)
    other = create("convnet3d", num_classes=4, clip_shape=SMALL, seed=99).eval()
    with torch.no_grad():
        torch.testing.assert_close(functional_forward(other, flat, x), model(x))
        assert not torch.allclose(other(x), model(x))


def test_train_mode_dropout_matches_under_same_rng_state():
    model, x = small_model_and_input("convnet3d")
    model.train()
    flat = flatten_params(model)
    with torch.no_grad():
        torch.manual_seed(123)
        ref = model(x)
        torch.manual_seed(123)
        out = functional_forward(model, flat, x)
        torch.manual_seed(124)
        other = functional_forward(model, flat, x)
    torch.testing.assert_close(out, ref)
    assert not torch.equal(out, other)  # dropout is really active


def test_batchnorm_buffers_are_kept_and_updated_like_a_module_call():
    model = create("convnet", num_classes=3, clip_shape=SMALL, norm="batchnorm", width=8, seed=0)
    twin = create("convnet", num_classes=3, clip_shape=SMALL, norm="batchnorm", width=8, seed=0)
    x = torch.randn(4, *SMALL[1:])
    torch.testing.assert_close(functional_forward(model, flatten_params(model), x), twin(x))
    for (name, a), (_, b) in zip(model.named_buffers(), twin.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert model.features[1].num_batches_tracked.item() == 1


def test_flat_layout_is_named_parameters_order_and_a_copy():
    model = create("convnet_gru", num_classes=3, clip_shape=SMALL, width=8, hidden=8)
    flat = flatten_params(model)
    shapes = param_shapes(model)
    assert list(shapes) == [n for n, _ in model.named_parameters()]
    assert flat.ndim == 1 and flat.numel() == sum(s.numel() for s in shapes.values())
    assert not flat.requires_grad
    views = unflatten(model, flat)
    for name, p in model.named_parameters():
        assert torch.equal(views[name], p) and views[name].shape == p.shape
    flat.zero_()  # a copy: the model is untouched, the views alias flat
    assert all(p.abs().sum() > 0 for p in model.parameters() if p.std() > 0)
    assert all(v.abs().sum() == 0 for v in views.values())
    with pytest.raises(ValueError, match="1-D with"):
        unflatten(model, flat[:-1])
    with pytest.raises(ValueError, match="method"):
        functional_forward(model, flat, torch.zeros(1, *SMALL), method="backward")


def test_autocast_context_is_bf16_on_cuda_only():
    assert isinstance(autocast_context("cpu", True), contextlib.nullcontext)
    assert isinstance(autocast_context(torch.device("cuda"), False), contextlib.nullcontext)
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else contextlib.nullcontext():
        ctx = autocast_context("cuda:0", True)
    assert isinstance(ctx, torch.autocast)
    assert ctx.fast_dtype == torch.bfloat16
    model, x = small_model_and_input("convnet")
    with autocast_context(x.device, True):
        assert model(x).dtype == torch.float32


@pytest.mark.parametrize(
    ("precision", "math"), [("fp32", "ieee"), ("tf32", "tf32"), ("bf16", "tf32")]
)
def test_fp32_math_context_sets_the_cuda_backends_and_restores_them(precision, math):
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    assert isinstance(fp32_math_context("cpu", precision), contextlib.nullcontext)
    with pytest.raises(RuntimeError, match="inside"), fp32_math_context("cuda:0", precision):
        assert (conv.fp32_precision, matmul.fp32_precision) == (math, math)
        raise RuntimeError("inside")
    assert (conv.fp32_precision, matmul.fp32_precision) == before
