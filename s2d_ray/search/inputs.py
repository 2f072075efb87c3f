"""The search's inputs, reused when present and built when not, in the order data flows:
prepared shards (the embedded dataset only; others need ``s2d prepare`` first) → the
expert store (Ray Train farm) → one static memory per spc the space can ask for (and per seed).

They live on the search's shared storage (``--storage``: a bucket or a mount every node
reaches; the workdir on one machine), since trials on any node read them. Reused inputs are
checked against the space before any trial starts (the shards' dataset, the experts' shards
and length), so a mismatch is one error, not one per trial. A smoke test builds its tiny
inputs under ``smoke/``, never where a real search would reuse them.
"""

from __future__ import annotations

from s2d_ray import files
from s2d_ray.cluster import run_with_resources
from s2d_ray.data.shards import MANIFEST as SHARDS_MANIFEST
from s2d_ray.data.stream import ClipShards
from s2d_ray.methods import METHODS, STATIC_METHODS, smoke_settings
from s2d_ray.search.config import SearchConfig
from s2d_ray.search.spaces import SearchSpace
from s2d_ray.synthetic.io import MANIFEST
from s2d_ray.tracking import TrackingConfig


def ensure_inputs(
    config: SearchConfig, space: SearchSpace, tracking: TrackingConfig
) -> tuple[str, str | None, tuple[tuple[int, str], ...]]:
    """(shards, expert store or None, static memories by spc), built where missing."""
    root = inputs_root(config)
    data = config.data or files.join(root, "data")
    if not _holds(data, SHARDS_MANIFEST):
        if not config.build or space.dataset != "embedded":
            raise FileNotFoundError(
                f"no clip shards at {data}: prepare them first with `s2d prepare "
                f"--dataset {space.dataset} --out {data} ...` and pass --data"
            )
        _prepare_embedded(data, config.smoke)
    holds = ClipShards(data).manifest["dataset"]
    if holds != space.dataset:
        raise ValueError(
            f"the shards at {data} hold {holds}, the space {config.space} searches "
            f"{space.dataset}: pass --data with {space.dataset}'s shards (or another --storage)"
        )
    method = METHODS[space.method]
    experts = None
    if "experts" in method.Config.model_fields:
        experts = config.experts or files.join(root, "experts")
        _ensure_experts(config, space, data, experts, tracking)
    statics = []
    if method.needs_static:
        for spc in _static_sizes(space):
            statics.append((spc, _ensure_static(config, space, data, spc, tracking)))
    return data, experts, tuple(statics)


def inputs_root(config: SearchConfig) -> str:
    """Where missing inputs are built: the shared storage (the workdir unless ``--storage``),
    or its ``smoke`` folder for a smoke test."""
    root = config.storage or config.workdir
    return files.join(root, "smoke") if config.smoke else root


def _holds(folder: str, name: str) -> bool:
    fs, path = files.filesystem(folder)
    return files.exists(fs, files.join(path, name))


def _prepare_embedded(out: str, smoke: bool) -> None:
    from s2d_ray.data import PrepareConfig, prepare

    print(f"search: preparing the embedded dataset in {out}", flush=True)
    prepare(
        PrepareConfig(dataset="embedded", out=out, max_videos_per_class=4 if smoke else None),
        progress=False,
    )


def _ensure_experts(config, space, data, out, tracking) -> None:
    from s2d_ray.evaluation import EvalConfig  # its normalisation is the trials'
    from s2d_ray.experts.farm import FarmConfig, run_farm
    from s2d_ray.experts.store import TrajectoryStore
    from s2d_ray.experts.training import ExpertConfig
    from s2d_ray.methods.mtt import check_experts

    defaults = METHODS[space.method].Config.model_fields
    points = [*space.paper, space.corner("low"), space.corner("high")]
    settings = [space.trial_settings(p)[0] for p in points]

    def most(key: str) -> int:  # what any trial may read of the trajectories
        return max(s.get(key, defaults[key].default) for s in settings)

    max_start, expert_epochs = most("max_start_epoch"), most("expert_epochs")
    count = 1 if config.smoke else config.num_experts
    complete = 0
    if _holds(out, "store.json"):
        complete = len(TrajectoryStore.open(out).experts(complete_only=True))
    if complete >= count:  # what every trial's MTT would check, once, before the first
        check_experts(out, ClipShards(data), EvalConfig().normalize, max_start, expert_epochs)
        return
    if not config.build:
        raise FileNotFoundError(
            f"{out} holds {complete} complete experts, the search needs {count}; train them "
            f"with `s2d experts --data {data} --out {out} --num-experts "
            f"{count}` or drop --no-build"
        )
    expert = ExpertConfig(max_start_epoch=max_start, expert_epochs=expert_epochs)
    # An expert trainer is a trial's size of work: on a GPU box it gets a trial's GPU share.
    gpus = (
        space.resources.gpu if config.farm_gpus_per_worker is None else config.farm_gpus_per_worker
    )
    print(f"search: training {count - complete} experts into {out}", flush=True)
    run_farm(
        FarmConfig(
            data=data,
            out=out,
            num_experts=count,
            workers=min(config.farm_workers, count - complete),
            gpus_per_worker=gpus,
            expert=expert,
        ),
        tracking,
        progress=False,
    )


def _static_sizes(space: SearchSpace) -> list[int]:
    ratios = [space.fixed.get("spc:dpc")] if "spc:dpc" in space.fixed else []
    if "spc:dpc" in space.space:
        ratios += space.space["spc:dpc"].values
    if not ratios:
        return [space.ipc]  # the S2D methods' default: one still per video
    return sorted({space.trial_settings({**space.corner("low"), "spc:dpc": r})[1] for r in ratios})


def _ensure_static(config, space, data, spc, tracking) -> str:
    from s2d_ray.distill import DistillConfig, run_distillation

    # a static memory per seed: a search at another seed is another draw of the whole chain
    seed = f"-seed{space.seed}" if space.seed else ""
    out = files.join(inputs_root(config), f"static-spc{spc}{seed}")
    if _holds(out, MANIFEST):
        fs, path = files.filesystem(out)
        made_from = files.read_json(fs, files.join(path, MANIFEST))["dataset"]["fingerprint"]
        if made_from != ClipShards(data).fingerprint:
            raise ValueError(
                f"the static memory at {out} was distilled from other shards than {data}; "
                "delete it to distil it again, or give another --storage"
            )
        return out
    if not config.build:
        raise FileNotFoundError(
            f"no static memory at {out}: make it with `s2d static --data "
            f"{data} --out {out} --spc {spc}` or drop --no-build"
        )
    print(f"search: distilling the static memory (spc {spc}) into {out}", flush=True)
    iterations = 2 if config.smoke else config.static_iterations
    resources = space.resources
    run_with_resources(
        run_distillation,
        DistillConfig(
            method="dm",
            stage="static",
            data=data,
            out=out,
            ipc=spc,
            iterations=iterations,
            method_config=smoke_settings(STATIC_METHODS["dm"].Config) if config.smoke else {},
            final_eval=False,
            seed=space.seed,
            device=config.device,
        ),
        tracking,
        cpu=resources.cpu,
        gpu=resources.gpu,
        remote=config.offload(space),
    )
    return out
