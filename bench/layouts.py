"""Graph-free embeddings on the CPU: the networks' channels-last path vs plain NCHW.

DM embeds every real frame or clip of an iteration without a graph (the static stage: 64
frames per class through the 2-D ConvNet; S2D-DM and DM: clips through ConvNet3D), and so do
the class groups' motion scores. ``ConvNet.embed`` runs its whole trunk channels-last there,
``ConvNet3D`` its first block; with a graph both stay NCHW (it measured no faster). This
bench times ``embed`` under ``torch.no_grad()`` (the networks' own path) against the same
modules called in NCHW, in the same run, and checks that both give the same features.

    python bench/layouts.py [--repeats 5] [--smoke-test]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from calibration import print_calibration

from s2d_ray.models import create

# (network, input shape per item, items per call): DM's real side at the static stage's
# batch_real 64 and at the paper's 16x112² clips.
CASES = [
    ("convnet", (8, 3, 64, 64), 64),
    ("convnet", (16, 3, 112, 112), 64),
    ("convnet3d", (8, 3, 64, 64), 64),
    ("convnet3d", (16, 3, 112, 112), 16),
]


def seconds(call, repeats: int) -> float:
    """Best of ``repeats`` calls after one warm-up."""
    call()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def nchw_embed(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The same features with every module on NCHW tensors (the layout with a graph)."""
    if net.input_kind == "clip":
        return net.features(x.permute(0, 2, 1, 3, 4)).flatten(1)
    return net.features(x).flatten(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--smoke-test", action="store_true", help="one small case, one repeat")
    args = p.parse_args()
    print_calibration()
    cases = [("convnet", (8, 3, 64, 64), 4)] if args.smoke_test else CASES
    repeats = 1 if args.smoke_test else args.repeats
    print(f"{'network':<10} {'input':<12} {'items':>5} {'NCHW s':>8} {'own s':>8} {'ratio':>6}")
    torch.manual_seed(0)
    for arch, shape, items in cases:
        net = create(arch, num_classes=10, clip_shape=shape).eval()
        x = torch.randn(items, *(shape if net.input_kind == "clip" else shape[1:]))
        with torch.no_grad():
            same = torch.allclose(net.embed(x), nchw_embed(net, x), rtol=1e-4, atol=1e-4)
            if not same:
                raise SystemExit(f"{arch}: the channels-last features differ from NCHW's")
            plain = seconds(partial(nchw_embed, net, x), repeats)
            own = seconds(partial(net.embed, x), repeats)
        size = f"{shape[0]}x{shape[2]}²" if net.input_kind == "clip" else f"{shape[2]}²"
        print(f"{arch:<10} {size:<12} {items:>5} {plain:>8.3f} {own:>8.3f} {own / plain:>6.2f}")


if __name__ == "__main__":
    main()
