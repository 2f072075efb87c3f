"""The evaluation protocol: determinism, final-epoch reporting, the lr schedule, groups."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from clipdirs import clip_directory

from s2d_ray.data import ClipDataset, ClipShards
from s2d_ray.evaluation import (
    EvalConfig,
    class_groups,
    evaluate_real,
    evaluate_set,
    protocol,
    with_own_settings,
)
from s2d_ray.methods import RealData
from s2d_ray.methods.frepo import FREPO_PROTOCOL


@pytest.fixture(scope="module")
def real(embedded_small):
    return RealData.open(embedded_small)


@pytest.fixture(scope="module")
def data(real):
    return ClipDataset(real.shards, "test"), *real.random_videos(1, seed=0)


def test_same_seed_same_accuracy_and_final_epoch_reporting(data, monkeypatch):
    test, items, labels = data
    config = EvalConfig(epochs=4, repeats=2, seed=5)
    calls = []
    real_test = protocol.test_networks
    monkeypatch.setattr(
        protocol, "test_networks", lambda m, *a, **k: calls.append(len(m)) or real_test(m, *a, **k)
    )
    a = evaluate_set(items, labels, test, config)
    assert calls == [2]  # one pass, each repeat after its last epoch: never a best-of on test
    b = evaluate_set(items, labels, test, config)
    assert a.top1 == b.top1 and a.per_class == b.per_class
    c = evaluate_set(items, labels, test, config.model_copy(update={"seed": 6}))
    assert c.top1 != a.top1 or c.per_class != a.per_class
    assert len(a.top1) == 2 and a.mean == pytest.approx(np.mean(a.top1))
    assert all(0 <= t1 <= t5 <= 1 for t1, t5 in zip(a.top1, a.top5, strict=True))
    assert a.train_items == 10


def test_lr_is_cut_tenfold_at_the_half_with_a_fresh_optimiser():
    params = [torch.zeros(1, requires_grad=True)]
    schedule = protocol.EpochSchedule(params, EvalConfig(epochs=6, lr=0.05))
    first = schedule.start_epoch(0)
    assert isinstance(first, torch.optim.SGD) and first.param_groups[0]["lr"] == 0.05
    assert first.param_groups[0]["momentum"] == 0.9
    assert first.param_groups[0]["weight_decay"] == 5e-4
    params[0].grad = torch.ones(1)
    first.step()  # momentum builds up
    assert schedule.start_epoch(1) is first and schedule.start_epoch(2) is first
    cut = schedule.start_epoch(3)
    assert cut is not first and cut.param_groups[0]["lr"] == pytest.approx(0.005)
    assert not cut.state  # the reference re-creates the optimiser: momentum reset
    assert schedule.start_epoch(5) is cut


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")
def test_frepo_sets_train_with_adamw_warm_up_and_cosine():
    """SPEC §5: AdamW 1e-4 (wd 5e-4), warm-up from 0.01x over 10 % of the epochs, cosine to
    0.01x, 1000 epochs, MSE on label vectors."""
    config = with_own_settings(EvalConfig(), FREPO_PROTOCOL)
    assert (config.optimizer, config.schedule, config.loss) == ("adamw", "warmup_cosine", "mse")
    assert config.epochs == 1000 and config.lr == 1e-4
    schedule = protocol.EpochSchedule([torch.zeros(1, requires_grad=True)], config)
    lrs = []
    for epoch in range(config.epochs):
        optimizer = schedule.start_epoch(epoch)
        lrs.append(schedule.lr)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 5e-4
    assert lrs[0] == pytest.approx(1e-6)  # 0.01x at the start
    assert max(lrs) == lrs[100] and lrs[100] == pytest.approx(1e-4, rel=0.03)  # at 10 %
    assert lrs[50] == pytest.approx(0.5e-4, rel=0.03)  # half-way up the warm-up
    assert lrs[-1] == pytest.approx(1e-6, rel=0.01)  # 0.01x at the end
    assert all(b <= a for a, b in itertools.pairwise(lrs[100:]))  # cosine: down
    loss = protocol.protocol_loss(config, 3)
    logits = torch.tensor([[1.0, 0.0, 0.0]])
    assert float(loss(logits, torch.tensor([0]))) == 0.0  # one-hot targets
    assert float(loss(logits, torch.tensor([1]))) == pytest.approx(2 / 3)  # mean over elements
    vectors = torch.tensor([[0.5, 0.0, 0.0]])
    assert float(loss(logits, vectors)) == pytest.approx(0.25 / 3)  # learnt label vectors


def test_the_protocol_defaults_are_spec_5s():
    c = EvalConfig()
    assert (c.arch, c.epochs, c.lr, c.momentum, c.weight_decay) == (
        "convnet3d",
        500,
        0.01,
        0.9,
        5e-4,
    )
    assert (c.batch_size, c.eval_batch_size, c.repeats) == (256, 64, 3)
    assert (c.optimizer, c.schedule, c.loss, c.standardize) == ("sgd", "step", "ce", True)
    # cross-architecture: 100 epochs at lr 1e-2 whatever the set's own lr (MTT's syn_lr)
    for arch in ("convnet_gru", "convnet_lstm"):
        gru = with_own_settings(EvalConfig(arch=arch), {"lr": 0.003, "epochs": 500})
        assert (gru.lr, gru.epochs) == (0.01, 100)
        assert with_own_settings(EvalConfig(arch=arch, lr=0.2), {}).lr == 0.2  # the user's
    mtt = with_own_settings(EvalConfig(), {"lr": 0.003})
    assert (mtt.lr, mtt.epochs) == (0.003, 500)
    assert with_own_settings(EvalConfig(lr=0.02), {"lr": 0.003}).lr == 0.02


class _Lookup(torch.nn.Module):
    """Logits read from a table by the clip's id, written in its first pixel."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = (x[:, 0, 0, 0, 0] * 255).round().long()
        return self.table[ids]


def test_accuracies_have_known_answers(tmp_path):
    """top-1, top-5 and per-class top-1 over batches, against hand-computed figures."""
    classes, shape = 6, (1, 2, 2, 3)
    labels = [0, 0, 1, 1, 1, 2, 3, 4, 5, 5]
    frames = []
    for i in range(len(labels)):
        clip = np.zeros(shape, dtype=np.uint8)
        clip[0, 0, 0, 0] = i
        frames.append(clip)
    test = ClipDataset(clip_directory(tmp_path, frames, labels, shape, classes), "test")
    # the true class ranks, per clip: top-1 for clips 0, 2, 4, 5, 8; top-5 for all but 3, 9
    ranks = [1, 2, 1, 6, 1, 1, 5, 3, 1, 6]
    logits = torch.zeros(len(labels), classes)
    for i, (y, r) in enumerate(zip(labels, ranks, strict=True)):
        others = [c for c in range(classes) if c != y]
        order = [*others[: r - 1], y, *others[r - 1 :]]
        logits[i, order] = torch.arange(classes, 0, -1, dtype=torch.float32)
    config = EvalConfig(standardize=False, normalize="none", eval_batch_size=3)
    top1, top5, per_class = protocol.test_network(
        _Lookup(logits), test, config, torch.device("cpu")
    )
    assert (
        protocol.test_networks([_Lookup(logits)] * 2, test, config, torch.device("cpu"))
        == [(top1, top5, per_class)] * 2
    )
    assert top1 == pytest.approx(5 / 10)
    assert top5 == pytest.approx(8 / 10)
    assert per_class == pytest.approx([1 / 2, 2 / 3, 1.0, 0.0, 0.0, 1 / 2])
    result = protocol.EvalResult([top1, 0.3], [top5, 0.5], [per_class, [0.0] * 6], 10)
    assert result.mean == pytest.approx(0.4) and result.std == pytest.approx(0.1)
    assert result.group_accuracy([0, 2]) == pytest.approx((0.375, 0.375))


def test_stacked_repeats_train_each_network_as_a_separate_one(data, monkeypatch):
    """vmap repeats: the same init, order and update per repeat as one network at a time.
    Dropout is the one thing drawn otherwise (one stream for the stack): without it the two
    modes differ by float rounding only, a clip's prediction at most."""
    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: x)
    test, items, labels = data
    config = EvalConfig(epochs=3, repeats=2, precision="fp32")
    stacked = evaluate_set(items, labels, test, config.model_copy(update={"repeat_mode": "vmap"}))
    sequential = evaluate_set(
        items, labels, test, config.model_copy(update={"repeat_mode": "sequential"})
    )
    assert stacked.top1 != [stacked.top1[0]] * 2 or stacked.per_class[0] != stacked.per_class[1]
    for a, b in zip(stacked.top1, sequential.top1, strict=True):
        assert abs(a - b) <= 1 / len(test) + 1e-9


def test_full_data_trains_on_one_jittered_clip_per_video(real, data, monkeypatch):
    test = data[0]
    seen: list[list[int]] = []
    gather = type(real.train)._gather  # every read of clips goes through it

    def record(self, positions, *args):
        if self is real.train:
            seen.append(positions.tolist())
        return gather(self, positions, *args)

    monkeypatch.setattr(type(real.train), "_gather", record)
    result = evaluate_real(real.train, test, EvalConfig(epochs=2, repeats=1, batch_size=16))
    assert result.train_items == real.train.num_videos == 40
    video_of = {int(r): v for v, rows in enumerate(real.train.video_rows) for r in rows}
    # 40 videos in batches of 16: 3 batches an epoch
    epochs = [[r for part in seen[e : e + 3] for r in part] for e in (0, 3)]
    assert len(seen) == 6
    for rows in epochs:  # each epoch: every video once, one of its stored clips
        assert sorted(video_of[r] for r in rows) == list(range(40))
    assert sorted(epochs[0]) != sorted(epochs[1])  # the clip per video is re-drawn per epoch
    assert 0 <= result.mean <= 1


def test_baselines_are_trained_once_per_dataset_and_protocol(real, data, monkeypatch):
    """The random real and full-data rows are cached beside the shards, keyed by protocol."""
    from s2d_ray.evaluation import full_data_baseline, random_baseline, report

    test = data[0]
    trained = []
    for name in ("evaluate_set", "evaluate_real"):
        original = getattr(report, name)
        monkeypatch.setattr(
            report, name, lambda *a, _f=original, _n=name, **k: trained.append(_n) or _f(*a, **k)
        )
    config = EvalConfig(epochs=1, repeats=1, seed=123)
    first = [
        random_baseline(real, test, 1, config),
        full_data_baseline(real, test, config, flip=False),
    ]
    again = [
        random_baseline(real, test, 1, config),
        full_data_baseline(real, test, config, flip=False),
    ]
    assert trained == ["evaluate_set", "evaluate_real"]
    assert [r.top1 for r in again] == [r.top1 for r in first]
    full_data_baseline(real, test, config.model_copy(update={"epochs": 2}), flip=False)
    random_baseline(real, test, 2, config)
    assert trained[2:] == ["evaluate_real", "evaluate_set"]  # another protocol or ipc: trained


@pytest.mark.parametrize("arch", ["convnet_gru", "convnet_lstm"])
def test_rows_beside_a_cross_architecture_set_get_its_protocol(real, data, monkeypatch, arch):
    """Every row of a table is judged alike: on CNN+GRU / CNN+LSTM the set trains 100 epochs
    at 1e-2 (SPEC §5), and so do the random real and full-data rows beside it (they trained
    500 at the protocol's default before)."""
    from s2d_ray.evaluation import full_data_baseline, random_baseline, report

    seen = []
    monkeypatch.setattr(
        report, "_cached", lambda real, name, extra, config, *a: seen.append(config)
    )
    config = EvalConfig(arch=arch, repeats=1)
    random_baseline(real, data[0], 1, config)
    full_data_baseline(real, data[0], config, flip=False)
    own = with_own_settings(config, {"lr": 0.003, "epochs": 500})  # the set's, e.g. MTT's
    assert [(c.epochs, c.lr) for c in seen] == [(own.epochs, own.lr)] * 2 == [(100, 0.01)] * 2
    given = EvalConfig(arch=arch, epochs=7, repeats=1)  # what the user sets holds for all rows
    random_baseline(real, data[0], 1, given)
    assert seen[-1].epochs == 7 == with_own_settings(given, {}).epochs


def test_static_and_dynamic_groups_split_the_classes_and_are_cached(embedded_small):
    shards = ClipShards(embedded_small)
    groups = class_groups(shards, epochs=1, clips_per_class=4)
    assert sorted(groups["static"] + groups["dynamic"]) == list(range(10))
    assert len(groups["static"]) == 5 and groups["fingerprint"] == shards.fingerprint
    assert 8 in groups["static"]  # cross_still does not move
    again = class_groups(shards, epochs=1, clips_per_class=4)
    assert again == groups


def test_auto_stacks_repeats_only_for_ieee_fp32_on_cuda():
    # bench/gpu_loops.py: stacked (grouped) convolutions get no tensor cores
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert protocol.resolve_repeat_mode(EvalConfig(precision="fp32"), cuda) == "vmap"
    for precision in ("tf32", "bf16"):
        assert protocol.resolve_repeat_mode(EvalConfig(precision=precision), cuda) == "sequential"
    for precision in ("fp32", "tf32", "bf16"):
        assert protocol.resolve_repeat_mode(EvalConfig(precision=precision), cpu) == "sequential"
    chosen = EvalConfig(repeat_mode="vmap", precision="bf16")
    assert protocol.resolve_repeat_mode(chosen, cpu) == "vmap"


def test_a_diverged_evaluation_network_is_named_not_passed_off_as_a_score(data):
    """A NaN loss leaves a chance-level accuracy: the protocol says so (seen on 11 dark ARID
    clips at the default lr, two random-real networks in three)."""
    test, items, labels = data
    with pytest.warns(protocol.DivergedEvaluationWarning, match="accuracy is chance"):
        evaluate_set(items, labels, test, EvalConfig(epochs=2, repeats=1, lr=1e12))


def test_a_few_clips_in_one_full_batch_step_do_not_run_away(monkeypatch):
    """Issue 38 (6): on ~10 clips (one full-batch step an epoch) the reference's SGD trains
    ConvNet3D at the edge of stability; a loss spike's update grows the weights, the next
    gradient grows with their product and the weights overflow (11 dark ARID clips: NaN at
    epoch 74 at lr 0.01, in float64 and without dropout too). Four flat-colour clips at lr 0.1
    run away the same way within 10 epochs under the reference's update (the default); the
    option max_grad_norm=20 keeps them finite, and is a no-op (bit-identical weights) while
    the gradient stays under it."""
    import warnings

    from s2d_ray.models import create

    gen = torch.Generator().manual_seed(1)
    items = torch.randn(4, 1, 3, 1, 1, generator=gen).expand(4, 8, 3, 48, 48).contiguous()
    labels = torch.arange(4)
    batches = protocol.draw_batches(lambda epoch: (items, labels), EvalConfig())

    def train(**update):
        config = EvalConfig(repeats=1, **update)
        model = create("convnet3d", num_classes=4, clip_shape=(8, 3, 48, 48), seed=0)
        return model, protocol.train_network(model, batches, config, 0, torch.device("cpu"))

    with warnings.catch_warnings():
        warnings.simplefilter("error", protocol.DivergedEvaluationWarning)
        assert np.isfinite(train(epochs=12, lr=0.1, max_grad_norm=20.0)[1])
    with pytest.warns(protocol.DivergedEvaluationWarning):  # the reference's: unbounded
        assert np.isnan(train(epochs=12, lr=0.1)[1])
    # under the cap, a step is the reference's to the bit
    capped, uncapped = train(epochs=2, max_grad_norm=20.0), train(epochs=2)
    for a, b in zip(capped[0].parameters(), uncapped[0].parameters(), strict=True):
        assert torch.equal(a, b)
    # stacked repeats (vmap) are capped each by its own norm, as one network at a time
    from s2d_ray.models.step import clip_grad_norm_

    grads = [torch.randn(3, 5, generator=gen) * torch.tensor([[1.0], [10.0], [100.0]])]
    stacked = [torch.zeros(3, 5, requires_grad=True)]
    stacked[0].grad = grads[0].clone()
    clip_grad_norm_(stacked, 20.0, stacked=True)
    for r in range(3):
        one = torch.zeros(5, requires_grad=True)
        one.grad = grads[0][r].clone()
        torch.nn.utils.clip_grad_norm_([one], 20.0)
        assert torch.allclose(stacked[0].grad[r], one.grad)
