"""The CUDA paths: what each precision computes, and the pinned, sync-free data path of expert
training. They need a GPU, which CI does not have: run them on one with
``pytest tests/test_cuda.py`` (bench/gpu_loops.py gives the speeds)."""

from __future__ import annotations

import math

import pytest
import torch

from s2d_ray.data import ClipDataset, ClipShards
from s2d_ray.evaluation import EvalConfig, protocol
from s2d_ray.experts.training import ExpertConfig, build_network, evaluate, train_epoch
from s2d_ray.experts.training import trajectory_settings as settings_of
from s2d_ray.models import create
from s2d_ray.models.step import train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def gradient(model, x, y, precision: str) -> torch.Tensor:
    model.eval()  # no dropout: only the arithmetic differs between devices and precisions
    train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), x, y, precision=precision)
    return torch.cat([p.grad.flatten() for p in model.parameters()]).cpu()


# Measured on an H100 at this shape and seed: 1e-4, 0.055 and 0.14. Max pooling routes the
# gradient through one element per window, so a rounding that flips a maximum moves whole
# entries: these relative errors are larger than the arithmetic's own.
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-3), ("tf32", 0.1), ("bf16", 0.3)])
def test_each_precision_on_cuda_against_ieee_fp32_on_the_cpu(precision, tolerance):
    model = create("convnet3d", num_classes=10, clip_shape=(8, 3, 64, 64), seed=0)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 8, 3, 64, 64, generator=generator), torch.arange(32) % 10
    reference = gradient(model, x, y, "fp32")
    got = gradient(model.to(CUDA), x.to(CUDA), y.to(CUDA), precision)
    assert torch.isfinite(got).all()
    assert float((got - reference).norm() / reference.norm()) < tolerance


def test_expert_training_on_cuda_reads_pinned_batches_and_tests_as_the_cpu(tiny_shards):
    shards = ClipShards(tiny_shards)
    train, test = ClipDataset(shards, "train"), ClipDataset(shards, "test")
    frames, _ = train.batch([0, 1], pin_memory=True)
    assert frames.is_pinned() and torch.equal(frames, train.batch([0, 1])[0])
    config = ExpertConfig(batch_size=4, flip=False, precision="fp32")
    model = build_network(settings_of(config, shards), 0, CUDA)
    loss = train_epoch(model, train, config, 0, 1, torch.Generator().manual_seed(0), CUDA)
    assert math.isfinite(loss)
    on_gpu = evaluate(model, test, config, CUDA)
    on_cpu = evaluate(model.cpu(), test, config, torch.device("cpu"))
    assert on_gpu["test_acc"] == on_cpu["test_acc"]
    assert on_gpu["test_loss"] == pytest.approx(on_cpu["test_loss"], rel=1e-4)


def test_the_protocol_tests_a_network_on_cuda_as_on_the_cpu(tiny_shards):
    test = ClipDataset(ClipShards(tiny_shards), "test")
    model = create("convnet3d", num_classes=test.num_classes, clip_shape=(8, 3, 64, 64), seed=0)
    config = EvalConfig(precision="fp32", eval_batch_size=2)  # several batches
    top1, top5, per_class = protocol.test_network(model.to(CUDA), test, config, CUDA)
    assert (top1, top5, per_class) == protocol.test_network(
        model.cpu(), test, config, torch.device("cpu")
    )
