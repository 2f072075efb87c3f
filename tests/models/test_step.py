"""The shared training step: micro-batching is exact for these norm-free networks (one
256-clip batch against its accumulated parts), stacked repeats split along the batch, the
same seed repeats the same draws, and bad settings are refused."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from s2d_ray.commands.common import micro_batch_arg
from s2d_ray.evaluation import EvalConfig
from s2d_ray.experts.training import ExpertConfig
from s2d_ray.models import create, step
from s2d_ray.models.step import AUTO_PART_ELEMENTS, part_size, predict, train_step
from s2d_ray.synthetic.base import supervised_loss

CLIP = (8, 3, 48, 48)  # small clips ConvNet3D still takes: 256 of them in seconds


def network(dropout: float = 0.0) -> torch.nn.Module:
    return create("convnet3d", num_classes=10, clip_shape=CLIP, seed=3, dropout=dropout).train()


def batch(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *CLIP, generator=g), torch.randint(0, 10, (n,), generator=g)


def step_gradients(model, x, y, micro_batch, loss_fn=torch.nn.functional.cross_entropy):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keep the weights: compare grads
    loss = train_step(model, optimizer, x, y, loss_fn, micro_batch=micro_batch)
    return loss, [p.grad.clone() for p in model.parameters()]


def test_a_256_clip_batch_and_its_accumulated_micro_batches_give_the_same_gradient():
    x, y = batch()
    whole_loss, whole = step_gradients(network(), x, y, None)
    loss, parts = step_gradients(network(), x, y, 100)  # unequal parts 100, 100, 56
    assert float(loss) == pytest.approx(float(whole_loss), rel=1e-5)
    for a, b in zip(whole, parts, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_accumulation_is_exact_for_soft_labels_and_a_full_update():
    x, _ = batch(24)
    soft = torch.softmax(torch.randn(24, 10, generator=torch.Generator().manual_seed(1)), 1)
    models = [network(), network()]
    for model, micro in zip(models, (None, 8), strict=True):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        for _ in range(2):
            train_step(model, optimizer, x, soft, supervised_loss, micro_batch=micro)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_stacked_repeats_split_along_the_batch_not_the_repeats():
    """``batch_dim=1`` over (R, B, ...) inputs, as the evaluation's vmapped repeats use it."""
    models = [torch.nn.Linear(6, 3) for _ in range(2)]
    params, buffers = stack_module_state(models)
    base = torch.nn.Linear(6, 3).to("meta")
    forward = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))
    x = torch.randn(2, 20, 6)
    y = torch.randint(0, 3, (2, 20))

    def loss_fn(logits, target):
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(0, 1)) * 2

    grads = []
    for micro in (None, 7):
        for p in params.values():
            p.grad = None
        optimizer = torch.optim.SGD(params.values(), lr=0.0)
        run = lambda part: forward(params, buffers, part)  # noqa: E731
        train_step(run, optimizer, x, y, loss_fn, micro_batch=micro, batch_dim=1)
        grads.append([p.grad.clone() for p in params.values()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a)
    for r, model in enumerate(models):  # each repeat's gradient is its own network's
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[r]), y[r]).backward()
        torch.testing.assert_close(grads[0][0][r], model.weight.grad)


def test_dropout_draws_repeat_for_the_same_seed_and_micro_batch():
    x, y = batch(16)

    def trained(micro):
        torch.manual_seed(7)
        model = network(dropout=0.5)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        train_step(model, optimizer, x, y, micro_batch=micro)
        return torch.nn.utils.parameters_to_vector(model.parameters())

    assert torch.equal(trained(8), trained(8))
    assert not torch.equal(trained(8), trained(None))  # other masks, same distribution


def test_predict_in_parts_matches_one_forward():
    x, _ = batch(40)
    model = network().eval()
    with torch.no_grad():
        whole = model(x)
    torch.testing.assert_close(predict(model, x, micro_batch=16), whole, rtol=1e-5, atol=1e-5)


def test_auto_parts_hold_a_fixed_number_of_input_elements(monkeypatch):
    big, small = 16 * 3 * 112 * 112, 8 * 3 * 64 * 64
    assert part_size(256, "auto", big) == AUTO_PART_ELEMENTS // big == 8
    assert part_size(256, "auto", big, cpu=False) == 256  # a GPU keeps its whole batch
    assert part_size(256, "auto", small) == min(256, AUTO_PART_ELEMENTS // small)
    assert part_size(5, "auto", big) == 5  # a batch smaller than a part stays whole
    assert part_size(256, "auto", 10 * AUTO_PART_ELEMENTS) == 1  # at least one clip
    assert part_size(256, None, big) == 256 and part_size(256, 48, big) == 48
    # stacked repeats count the elements of every repeat: (R, B, ...) with batch_dim=1
    monkeypatch.setattr(step, "AUTO_PART_ELEMENTS", 12)  # two clips of three repeats of 2
    x, y = torch.zeros(3, 4, 2), torch.zeros(3, 4, dtype=torch.long)
    seen = []
    model = torch.nn.Linear(2, 2)
    train_step(
        lambda part: seen.append(part.shape[1]) or model(part),
        torch.optim.SGD(model.parameters(), lr=0.0),
        x,
        y,
        lambda logits, t: torch.nn.functional.cross_entropy(logits.flatten(0, 1), t.flatten()),
        micro_batch="auto",
        batch_dim=1,
    )
    assert seen == [2, 2]


def test_bad_micro_batch_is_refused_everywhere():
    x, y = batch(4)
    optimizer = torch.optim.SGD(network().parameters(), lr=0.01)
    for bad in (0, "half"):
        with pytest.raises(ValueError, match="micro_batch must be 'auto', None .* or at least 1"):
            train_step(network(), optimizer, x, y, micro_batch=bad)
    for config in (EvalConfig, ExpertConfig):
        assert config().micro_batch == "auto" and config(micro_batch=None).micro_batch is None
        for bad in (0, "half"):
            with pytest.raises(ValueError, match="micro_batch"):
                config(micro_batch=bad)
    assert [micro_batch_arg(v) for v in ("auto", "all", "32")] == ["auto", None, 32]
    with pytest.raises(argparse.ArgumentTypeError, match="expected auto, all or a number"):
        micro_batch_arg("half")
