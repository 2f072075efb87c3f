"""How methods build the sets they learn: full videos initialised from random real clips
(DM, MTT, FRePo) and the S2D memory on a frozen static memory (their S2D variants), each
temporally compressed when the method's config asks for it (``--syn-frames``, ``--segments``)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from s2d_ray.methods.registry import DistillContext
from s2d_ray.seeding import torch_generator
from s2d_ray.synthetic import S2DMemory, SyntheticImages, SyntheticVideos
from s2d_ray.synthetic.temporal import TemporalConfig, initial_frames, temporal_layout

# The S2D methods' integrator initialisation (synthetic/integrators.py): the reference's
# default, or "identity", which starts stage 2 from the still images themselves.
IntegratorInit = Annotated[
    Literal["default", "identity"],
    Field(description="H's start: default (the reference's) or identity (passes stills through)"),
]


def real_initialised_videos(config: TemporalConfig, context: DistillContext) -> SyntheticVideos:
    """ipc random real videos per class; compressed ones keep the frames at the centres of
    the spans their frames will hold."""
    real = context.real
    videos, _ = real.random_videos(context.ipc, context.seed)
    temporal = temporal_layout(real.clip_shape[0], config)
    if temporal is not None:
        keep = initial_frames(temporal["frames"], temporal["syn_frames"], temporal["segments"])
        videos = videos[:, keep.to(videos.device)]
    return SyntheticVideos(videos, real.num_classes, temporal).to(context.device)


def build_memory(config: TemporalConfig, context: DistillContext) -> S2DMemory:
    """The S2D memory on the frozen static memory of ``context``; checks it fits the data."""
    static = context.static
    real = context.real
    if not isinstance(static, SyntheticImages):
        raise ValueError("S2D methods need a static memory: pass --static DIR from distill_static")
    if (
        static.num_classes != real.num_classes
        or tuple(static.items.shape[1:]) != (real.clip_shape[1:])
    ):
        raise ValueError(
            f"the static memory holds {static.num_classes} classes of images "
            f"{tuple(static.items.shape[1:])}, but the data has {real.num_classes} classes of "
            f"frames {real.clip_shape[1:]}; distil the static memory on the same shards"
        )
    made_on = context.static_manifest.get("dataset", {}).get("fingerprint")
    if made_on not in (None, real.shards.fingerprint):
        raise ValueError(
            f"the static memory was distilled on dataset fingerprint {made_on}, the data has "
            f"{real.shards.fingerprint}; distil the static memory on the same shards"
        )
    generator = torch_generator(context.seed, "s2d-memory-init")
    return S2DMemory(
        static.items.detach(),
        real.num_classes,
        frames=real.clip_shape[0],
        vpc=context.ipc,
        dpc=config.dpc,
        integrator=config.integrator,
        integrator_init=config.integrator_init,
        generator=generator,
        temporal=temporal_layout(real.clip_shape[0], config),
    ).to(context.device)


def s2d_groups(memory: S2DMemory, config) -> list[dict]:
    """Stage 2's parameter groups: the dynamic memory at lr_dynamic, H at lr_hal; the static
    memory is frozen. None for a static-only memory (dpc = 0), which has nothing to learn."""
    if not memory.dpc:
        return []
    return [
        {"params": [memory.dynamic], "lr": config.lr_dynamic},
        {"params": list(memory.integrator.parameters()), "lr": config.lr_hal},
    ]


def s2d_optimizers(memory: S2DMemory, config) -> list[torch.optim.Optimizer]:
    """SGD with momentum (DM and MTT's stage 2) over ``s2d_groups``."""
    groups = s2d_groups(memory, config)
    return [torch.optim.SGD(groups, momentum=config.momentum)] if groups else []
