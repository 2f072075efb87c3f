"""The S2D memory: static images, per-class dynamic maps and a shared integrator H (SPEC §3).

Pairing rule (any spc, dpc, vpc >= 1). Each class has vpc video slots. The spc static images of
a class are split into vpc consecutive groups, image j going to slot ``j * vpc // spc``; when
spc < vpc, slot k gets image ``k % spc``. The dpc dynamic maps are grouped the same way. Slot k
of class c pairs one static image of its group with one dynamic map of its group:

* a fresh uniform draw per slot at every call of ``materialize(generator)``: each
  distillation step, and each epoch of training on the set (the evaluation's default,
  ``EvalConfig.pairs = "redraw"``: C * vpc videos an epoch, as the reference's evaluation
  re-drew the pairing on every access). The reference's rule is the special case
  spc = dpc = 2 * vpc (groups {2k, 2k + 1});
* ``materialize()`` without a generator: every pair of each slot's groups, in order,
  |static group| x |dynamic group| videos per slot, fixed (export, ``load_distilled``, and
  evaluation with ``pairs = "all"``). With 1:1 memories (spc = dpc = vpc) both are one video
  per slot.

dpc = 0 is the "static only" ablation (spc:dpc = 1:0): a video is its still image repeated
over time, and no integrator is stored. H starts as PyTorch initialises it (the reference's)
or, with ``integrator_init="identity"``, passing the still image through
(``synthetic/integrators.py``).

With a ``temporal`` layout (temporal compression) the dynamic maps have K < T frames; H makes
K-frame videos, expanded over the real T frames as ``synthetic.temporal`` describes.
"""

from __future__ import annotations

import torch
from torch import nn

from s2d_ray.synthetic.base import SyntheticSet, check_per_class
from s2d_ray.synthetic.integrators import create_integrator
from s2d_ray.synthetic.temporal import expand_module_time, register_expansion


def slot_groups(count: int, vpc: int) -> list[list[int]]:
    """Indices (within a class) of the memories that may fill each of the ``vpc`` slots."""
    if count >= vpc:
        return [[j for j in range(count) if j * vpc // count == k] for k in range(vpc)]
    return [[k % count] for k in range(vpc)]


class S2DMemory(SyntheticSet):
    """static (C * spc, 3, H, W), dynamic (C, dpc, T, 1, H, W), integrator H.

    Only ``dynamic`` and H are learnable in stage 2; the static memory is a frozen buffer.
    """

    kind = "s2d"

    def __init__(
        self,
        static: torch.Tensor,
        num_classes: int,
        *,
        frames: int,
        vpc: int,
        dpc: int,
        integrator: str = "conv3d",
        generator: torch.Generator | None = None,
        temporal: dict | None = None,
        integrator_init: str = "default",
    ) -> None:
        super().__init__()
        if static.dim() != 4 or static.shape[1] != 3 or static.shape[0] % num_classes:
            raise ValueError(
                f"static memory must be (C * spc, 3, H, W) for {num_classes} classes, "
                f"got {tuple(static.shape)}"
            )
        self.num_classes = num_classes
        self.spc = static.shape[0] // num_classes
        self.vpc = check_per_class("vpc", vpc)
        self.dpc = check_per_class("dpc", dpc, minimum=0)
        self.frames = check_per_class("frames", frames)
        self.integrator_name = integrator if self.dpc else None
        self.temporal = temporal
        stored_frames = frames
        if temporal is not None:
            if temporal["frames"] != frames:
                raise ValueError(f"temporal layout for {temporal['frames']} frames, not {frames}")
            stored_frames = temporal["syn_frames"]
            register_expansion(self, temporal)
        _, _, height, width = static.shape
        self.register_buffer("static", static.detach().clone().float())
        if self.dpc:
            shape = (num_classes, self.dpc, stored_frames, 1, height, width)
            self.dynamic = nn.Parameter(torch.randn(shape, generator=generator))
            self.integrator = create_integrator(integrator, generator, integrator_init)
        else:
            self.dynamic, self.integrator = None, None
        self.static_groups = slot_groups(self.spc, self.vpc)
        self.dynamic_groups = slot_groups(self.dpc, self.vpc) if self.dpc else None

    # -- pairing ---------------------------------------------------------------------------
    def pairs(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """(static index, dynamic index, label, slot) per video; indices are into the flat
        memories (C * spc and C * dpc) and the C * vpc slots. A random draw per slot with
        ``generator``, else every pair."""
        statics, dynamics, labels, slots = [], [], [], []
        dyn_groups = self.dynamic_groups or [[0]] * self.vpc
        for c in range(self.num_classes):
            groups = zip(self.static_groups, dyn_groups, strict=True)
            for k, (s_group, d_group) in enumerate(groups):
                if generator is not None:
                    choice = torch.randint(len(s_group) * len(d_group), (1,), generator=generator)
                    combos = [divmod(int(choice), len(d_group))]
                else:
                    combos = [(i, j) for i in range(len(s_group)) for j in range(len(d_group))]
                for i, j in combos:
                    statics.append(c * self.spc + s_group[i])
                    dynamics.append(c * max(self.dpc, 1) + d_group[j])
                    labels.append(c)
                    slots.append(c * self.vpc + k)
        device = self.static.device
        return tuple(
            torch.tensor(v, dtype=torch.int64, device=device)
            for v in (statics, dynamics, labels, slots)
        )

    def materialize(self, generator=None):
        """Videos (N, T, 3, H, W) and labels: one per slot with ``generator`` (distilling),
        else every pair of each slot (using the set)."""
        static_idx, dynamic_idx, labels, slots = self.pairs(generator)
        labels = self._targets(labels, slots)
        still = self.static[static_idx]
        if not self.dpc:
            return still.unsqueeze(1).expand(-1, self.frames, -1, -1, -1), labels
        videos = self.integrator(still, self.dynamic.flatten(0, 1)[dynamic_idx])
        if self.temporal is not None:
            videos = expand_module_time(self, videos, self.temporal)
        return videos, labels

    def slot_classes(self) -> torch.Tensor:
        return torch.arange(self.num_classes).repeat_interleave(self.vpc)

    # -- storage ---------------------------------------------------------------------------
    def stored_tensors(self):
        tensors = {"static": self.static.detach()}
        if self.dpc:
            tensors["dynamic"] = self.dynamic.detach()
            for name, p in self.integrator.named_parameters():
                tensors[f"integrator.{name}"] = p.detach()
        return self._with_labels(tensors)

    def layout(self):
        return {
            "num_classes": self.num_classes,
            "spc": self.spc,
            "dpc": self.dpc,
            "vpc": self.vpc,
            "frames": self.frames,
            "integrator": self.integrator_name,
            "image_shape": list(self.static.shape[1:]),
            **({"temporal": self.temporal} if self.temporal is not None else {}),
        }

    @classmethod
    def from_saved(cls, layout, tensors):
        memory = cls(
            tensors["static"],
            layout["num_classes"],
            frames=layout["frames"],
            vpc=layout["vpc"],
            dpc=layout["dpc"],
            integrator=layout["integrator"] or "conv3d",
            temporal=layout.get("temporal"),
        )
        if memory.dpc:
            with torch.no_grad():
                memory.dynamic.copy_(tensors["dynamic"])
                for name, p in memory.integrator.named_parameters():
                    p.copy_(tensors[f"integrator.{name}"])
        return memory._restore_labels(tensors)
