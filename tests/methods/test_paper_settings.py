"""The paper's budgets and switches as defaults (SPEC §3, §4, §6): iterations per method, the
syn_lr switch, the student's standardisation, the larger H, DC's loops, DM's real batches."""

from __future__ import annotations

import pytest
import torch

from s2d_ray.distill import DistillConfig
from s2d_ray.methods import METHODS, STATIC_METHODS, DistillContext, get_method, paper_defaults
from s2d_ray.methods.static import DC_LOOPS, dc_loops

PAPER_ITERATIONS = {
    "dm": 5000,
    "s2d-dm": 5000,
    "mtt": 8000,
    "s2d-mtt": 10000,
    "frepo": 10000,
    "s2d-frepo": 10000,
}


@pytest.mark.parametrize("method", sorted(n for n, c in METHODS.items() if c.iterative))
def test_iterations_default_to_the_paper_s_scripts(method):
    config = DistillConfig(method=method, data="/d", out="/o", ipc=1)
    assert config.iterations == PAPER_ITERATIONS[method]
    assert DistillConfig(method=method, data="/d", out="/o", ipc=1, iterations=7).iterations == 7


@pytest.mark.parametrize("method", sorted(STATIC_METHODS))
def test_static_learning_defaults_to_dc_s_1000_iterations(method):
    assert DistillConfig(method=method, stage="static", data="/d", out="/o", ipc=1).iterations == (
        1000
    )


def test_help_shows_the_iteration_defaults(capsys):
    from s2d_ray.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["distill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "mtt 8000" in text and "s2d-mtt 10000" in text and "dm 5000" in text
    assert "--learn-syn-lr" in text and "--no-learn-syn-lr" in text


@pytest.mark.parametrize(
    ("method", "dataset", "ipc", "learned"),
    [
        ("mtt", "miniucf", 1, False),  # the paper: frozen scored higher in this cell
        ("mtt", "miniucf", 5, True),
        ("mtt", "hmdb51", 1, True),
        ("mtt", "kinetics400", 5, True),
        ("s2d-mtt", "miniucf", 1, True),
        ("s2d-mtt", "hmdb51", 1, True),
        ("s2d-mtt", "miniucf", 5, False),
        ("s2d-mtt", "hmdb51", 5, False),
        ("s2d-mtt", "kinetics400", 1, False),
        ("s2d-mtt", "ssv2", 1, False),
        ("s2d-mtt", "ssv2", 5, False),
    ],
)
def test_syn_lr_is_learnt_or_frozen_per_cell_as_the_paper(method, dataset, ipc, learned):
    frames = 8 if dataset in ("kinetics400", "ssv2") else 16
    settings = paper_defaults(method, dataset, ipc, frames)
    config = get_method(method).Config(**settings)
    assert config.learn_syn_lr is learned


def test_a_frozen_syn_lr_stays_and_the_set_is_evaluated_at_lr_teacher(real, embedded_experts):
    cls = get_method("mtt")
    settings = {"syn_steps": 2, "batch_syn": 5, "max_start_epoch": 2, "lr_img": 100.0}
    frozen = cls(
        cls.Config(**settings, experts=embedded_experts, learn_syn_lr=False),
        DistillContext(real, ipc=1, seed=0),
    )
    out = frozen.step(0)
    assert out["syn_lr"] == pytest.approx(0.01) and not frozen.syn_lr.requires_grad
    assert all(p is not frozen.syn_lr for p in frozen.learnable())
    assert frozen.eval_overrides() == {"lr": pytest.approx(0.01)}
    learnt = cls(
        cls.Config(**settings, experts=embedded_experts, lr_lr=1e3),
        DistillContext(real, ipc=1, seed=0),
    )
    assert learnt.step(0)["syn_lr"] != pytest.approx(0.01)


def test_the_student_is_not_standardised_unless_asked(real, embedded_experts):
    cls = get_method("mtt")
    base = {"syn_steps": 1, "batch_syn": 5, "max_start_epoch": 2, "experts": embedded_experts}
    default = cls(cls.Config(**base), DistillContext(real, ipc=1, seed=0))
    asked = cls(cls.Config(**base, student_standardize=True), DistillContext(real, ipc=1, seed=0))
    assert not default.standardize and asked.standardize  # the experts standardised
    assert float(default.loss(3)) != pytest.approx(float(asked.loss(3)), rel=1e-4)


def test_the_larger_h_is_miniucf_ipc1_s2d_dm_only():
    assert paper_defaults("s2d-dm", "miniucf", 1, 16)["integrator"] == "conv3d_tconv"
    assert paper_defaults("s2d-dm", "ucf101", 1, 16)["integrator"] == "conv3d_tconv"
    for dataset, ipc in (("miniucf", 5), ("hmdb51", 1), ("ssv2", 1), ("embedded", 1)):
        frames = 8 if dataset in ("ssv2", "embedded") else 16
        assert "integrator" not in paper_defaults("s2d-dm", dataset, ipc, frames)
    assert "integrator" not in paper_defaults("s2d-mtt", "miniucf", 1, 16)


def test_dc_loops_are_dc_s_get_loops():
    assert DC_LOOPS == {
        1: (1, 1),
        10: (10, 50),
        20: (20, 25),
        30: (30, 20),
        40: (40, 15),
        50: (50, 10),
    }
    assert dc_loops(1) == dc_loops(9) == (1, 1)
    assert dc_loops(10) == dc_loops(19) == (10, 50)
    assert dc_loops(50) == dc_loops(100) == (50, 10)
    assert paper_defaults("static-dc", "miniucf", 1, 16)["batch_real"] == 256


def test_a_dc_iteration_runs_its_outer_steps_and_trains_between_them(real, monkeypatch):
    cls = get_method("dc", STATIC_METHODS)
    config = cls.Config(batch_real=2, outer_loop=3, inner_loop=2)
    method = cls(config, DistillContext(real, ipc=1, seed=0))
    calls = {"match": 0, "train": 0}
    match, train = cls.matching_loss, cls._train_network

    def counted_match(self, net, generator):
        calls["match"] += 1
        return match(self, net, generator)

    def counted_train(self, net, optimizer, order):
        calls["train"] += 1
        before = [p.detach().clone() for p in net.parameters()]
        train(self, net, optimizer, order)
        assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))

    monkeypatch.setattr(cls, "matching_loss", counted_match)
    monkeypatch.setattr(cls, "_train_network", counted_train)
    start = method.synthetic.items.detach().clone()
    method.step(0)
    assert calls == {"match": 3, "train": 2}  # none after the last outer step
    assert not torch.equal(start, method.synthetic.items)
    small = cls(cls.Config(batch_real=2), DistillContext(real, ipc=1, seed=0))
    assert (small.outer, small.inner) == (1, 1)


def test_dm_real_batches_are_distinct_videos_one_clip_each(real):
    generator = torch.Generator().manual_seed(0)
    clips = real.class_clips(2, 4, generator)  # the class's 4 videos, each once
    videos = {}
    for rows in real.video_rows(2):
        for r in rows:
            videos[real.train.clip_array(int(r)).tobytes()] = tuple(int(x) for x in rows)
    owners = [videos[c.numpy().tobytes()] for c in clips]
    assert len(set(owners)) == 4
    more = real.class_clips(2, 6, generator)  # more than the class has: with replacement
    assert len(more) == 6
    again = real.class_clips(2, 4, torch.Generator().manual_seed(0))
    assert torch.equal(again, clips)
