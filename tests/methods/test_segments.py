"""Pairwise segment matching (DM): each real segment against its synthetic segment, through a
network for that length, losses summed; one segment is whole-clip matching."""

from __future__ import annotations

import pytest
import torch

from s2d_ray.methods import DistillContext, get_method
from s2d_ray.methods.dm import matching_network, mean_embedding_loss
from s2d_ray.seeding import torch_generator


def dm(real, **kw):
    cls = get_method("dm")
    settings = {"batch_real": 3, "network": "convnet_gru", **kw}
    return cls(cls.Config(**settings), DistillContext(real, ipc=1, seed=0))


def loss_on(method, spans, videos, labels, network_frames):
    nets = [matching_network("convnet_gru", method.context, 0, n) for n in network_frames]
    generator = torch_generator(0, "probe")
    return float(mean_embedding_loss(nets, spans, videos, labels, method.context, 3, generator))


def test_one_segment_is_whole_clip_matching(real):
    method = dm(real)
    videos, labels = method.synthetic.materialize()
    net = matching_network("convnet_gru", method.context, 0, 8)
    generator = torch_generator(0, "probe")
    expected = 0.0
    with torch.no_grad():
        for c in range(real.num_classes):  # the same draws, as DM made them before segments
            frames = real.class_clips(c, 3, generator)
            chunks = [real.to_float(frames[s : s + 2], generator, flip=True) for s in (0, 2)]
            real_mean = torch.cat([net.embed(x) for x in chunks]).mean(0)
            syn_mean = net.embed(videos[labels == c]).mean(0)
            expected += float((real_mean - syn_mean).square().sum())
    assert loss_on(method, [(0, 8)], videos, labels, [8]) == pytest.approx(expected, rel=1e-5)


def test_segments_are_matched_pairwise_and_summed(real):
    method = dm(real)
    videos, labels = method.synthetic.materialize()
    halves = loss_on(method, [(0, 4), (4, 8)], videos, labels, [4, 4])
    first = loss_on(method, [(0, 4)], videos, labels, [4])
    second = loss_on(method, [(4, 8)], videos, labels, [4])
    whole = loss_on(method, [(0, 8)], videos, labels, [8])
    assert halves == pytest.approx(first + second, rel=1e-5)
    assert halves != pytest.approx(whole, rel=1e-3)  # K changes the loss


def test_the_loss_changes_with_the_segment_count(real):
    losses = [float(dm(real, segments=k).loss(0).detach()) for k in (1, 2, 4)]
    assert len({round(v, 6) for v in losses}) == 3


def test_a_segment_too_short_for_convnet3d_names_the_fix(real):
    with pytest.raises(ValueError, match="--network convnet_gru"):
        dm(real, segments=2, network="convnet3d").loss(0)
