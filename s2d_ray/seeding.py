"""The one seeding helper: every random draw in s2d-ray derives from a user seed.

Sub-seeds are derived by hashing (seed, *keys) rather than by ``seed + i``, so that
streams for different purposes (expert 3, video "v_x_g01", test clip 2) never collide and
do not depend on the order in which work happens to be scheduled.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

_MASK_63 = (1 << 63) - 1


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed for the stream named by ``keys`` under ``seed``."""
    text = "\x1f".join([str(int(seed)), *(str(k) for k in keys)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK_63


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) global generators."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def numpy_rng(seed: int, *keys: object) -> np.random.Generator:
    """An independent NumPy generator for the stream ``keys`` under ``seed``."""
    return np.random.default_rng(derive_seed(seed, *keys))


def torch_generator(
    seed: int, *keys: object, device: str | torch.device = "cpu"
) -> torch.Generator:
    """An independent torch generator for the stream ``keys`` under ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen
