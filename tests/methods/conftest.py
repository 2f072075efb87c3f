"""Distillation contexts on a small embedded set (10 classes, 4 train videos each)."""

import pytest

from s2d_ray.methods import DistillContext, RealData


@pytest.fixture(scope="module")
def real(embedded_small):
    return RealData.open(embedded_small)


@pytest.fixture
def context(real):
    return DistillContext(real, ipc=1, seed=0)
