"""Building registered networks in tests at a size a 2-core CPU runs in seconds.

The recurrent nets default to the reference's sizing (LSTM hidden = frame features: 537 M
parameters at 8x64², ~30 s per forward/backward of two clips here). Generic tests build them
with a small hidden size; ``tests/models/test_models.py`` checks the default sizing exactly,
on the meta device.
"""

from __future__ import annotations

import torch

from s2d_ray.models import create

SMALL = (8, 3, 64, 64)
LARGE = (16, 3, 112, 112)
CPU_TEST_KWARGS = {"convnet_gru": {"hidden": 64}, "convnet_lstm": {"hidden": 64}}


def build(name: str, **kwargs) -> torch.nn.Module:
    return create(name, **{**CPU_TEST_KWARGS.get(name, {}), **kwargs})
