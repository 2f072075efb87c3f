"""bench/quality.py judges every row as its documentation says: FRePo sets under FRePo's
protocol for --frepo-epochs (not the table's --epochs), and the "judged as before" row with
cross-entropy on the videos' classes, not a regression on the learnt label vectors."""

from __future__ import annotations

import argparse

import pytest
import torch
from benches import bench_module

from s2d_ray.evaluation import EvalConfig
from s2d_ray.methods.frepo import FREPO_PROTOCOL
from s2d_ray.synthetic import SyntheticVideos


@pytest.fixture(scope="module")
def quality():
    with bench_module("quality") as module:
        yield module


def test_frepo_rows_train_for_frepo_epochs_and_the_old_row_on_classes(quality):
    args = argparse.Namespace(frepo_epochs=200)
    table = EvalConfig(epochs=100, repeats=3)
    frepo, hard = quality.row_protocol(table, dict(FREPO_PROTOCOL), {}, args)
    assert (frepo.epochs, frepo.optimizer, frepo.loss, frepo.lr) == (200, "adamw", "mse", 1e-4)
    assert not hard and frepo.standardize is False
    as_before = quality.OLD_FREPO_EVAL | {quality.HARD_LABELS: 1}
    old, hard = quality.row_protocol(table, dict(FREPO_PROTOCOL), as_before, args)
    assert (old.optimizer, old.loss, old.lr, old.schedule) == ("sgd", "ce", 1e-4, "step")
    assert hard and old.standardize is True
    mtt, hard = quality.row_protocol(table, {"lr": 0.003}, {}, args)
    assert (mtt.epochs, mtt.lr, hard) == (100, 0.003, False)


def test_a_set_without_its_label_vectors_trains_on_its_classes():
    videos = SyntheticVideos(torch.zeros(4, 2, 3, 4, 4), 2)
    videos.learn_labels(torch.full((4, 2), 0.3))
    assert videos.materialize()[1].is_floating_point()  # what "ce" would regress on
    videos.label_vectors = None
    assert videos.materialize()[1].tolist() == [0, 0, 1, 1]
