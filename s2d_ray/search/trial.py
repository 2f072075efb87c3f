"""One search trial: a distillation run at a sampled point of the space, reporting every
periodic evaluation to Tune (ASHA stops the weak ones) with its checkpoint.

The trial's distillation writes to ``<workdir>/trials/<trial id>`` on its node; each report
carries that folder (the set at that evaluation and the distillation's checkpoint) to Tune's
storage. So a trial restored by ``Tuner.restore`` (on this node or another) resumes the
distillation where it was, its MLflow child run is continued, not duplicated, and the
driver exports the best set from there, whichever node ran it.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2d_ray import files
from s2d_ray.distill import DistillConfig, DivergedError, run_distillation, run_name
from s2d_ray.evaluation import EvalConfig
from s2d_ray.methods import METHODS
from s2d_ray.methods.checkpoint import FOLDER
from s2d_ray.search.searcher import FINAL
from s2d_ray.search.spaces import SearchSpace
from s2d_ray.seeding import derive_seed
from s2d_ray.tracking import TrackingConfig


@dataclass(frozen=True)
class SearchInputs:
    """What every trial needs besides its point; small and picklable for Ray."""

    space: SearchSpace
    data: str
    workdir: str
    tracking: TrackingConfig
    experts: str | None = None
    statics: tuple[tuple[int, str], ...] = ()  # (spc, static memory folder)
    parent_run_id: str | None = None
    device: str = "auto"

    def static_for(self, spc: int | None) -> str | None:
        if spc is None:
            return None
        for have, path in self.statics:
            if have == spc:
                return path
        raise ValueError(f"no static memory with spc {spc} was built for this search")

    def trial_out(self, trial_id: str) -> Path:
        """Where a trial writes its distilled set and checkpoints."""
        return Path(self.workdir) / "trials" / trial_id


def trial_config(inputs: SearchInputs, point: dict[str, Any], trial_id: str) -> DistillConfig:
    """The distillation a trial runs: the space's method at ``point``, evaluated every
    ``budget.eval_every`` iterations with ``budget.eval_repeats`` fresh networks (the
    search's signal)."""
    space, budget = inputs.space, inputs.space.budget
    settings, spc = space.trial_settings(point)
    if inputs.experts and "experts" in METHODS[space.method].Config.model_fields:
        settings["experts"] = inputs.experts
    return DistillConfig(
        method=space.method,
        data=inputs.data,
        out=str(inputs.trial_out(trial_id)),
        ipc=space.ipc,
        static=inputs.static_for(spc),
        iterations=budget.iterations,
        eval_every=budget.eval_every,
        checkpoint_every=budget.eval_every,  # every report carries a fresh checkpoint
        eval=EvalConfig(epochs=budget.eval_epochs, repeats=1, seed=space.seed),
        eval_repeats_during=budget.eval_repeats,
        final_eval=False,
        method_config=settings,
        seed=space.seed,
        device=inputs.device,
    )


def final_protocol(space: SearchSpace) -> EvalConfig:
    """How the search's pick is judged: budget.final_repeats networks of final_epochs, none
    of them a network the trials' periodic evaluations trained. Those networks picked the
    best trial; judged by them again, its score would keep the luck it was picked for (the
    winner's curse: in bench/search.py, random search's pick lost 1.1 points to fresh ones)."""
    budget = space.budget
    return EvalConfig(
        epochs=budget.final_epochs,
        repeats=budget.final_repeats,
        seed=derive_seed(space.seed, "final-protocol"),
    )


def restore_distillation(out: Path, restored) -> None:
    """The distillation's checkpoint in ``out`` made Tune's (``restored``, None for a new
    trial). Tune's is the truth: a local one left by a run interrupted before its first
    report would resume the distillation ahead of Tune's count, and ASHA would compare this
    trial at a later iteration than the others at the same rung."""
    shutil.rmtree(out / FOLDER, ignore_errors=True)
    if restored is None:
        return
    with restored.as_directory() as saved:
        state = Path(saved) / FOLDER
        if not state.is_dir():  # a search begun before reports carried the whole folder
            state = Path(saved)
        shutil.copytree(state, out / FOLDER)


def run_trial(point: dict[str, Any], inputs: SearchInputs) -> None:
    """The Tune function trainable (``tune.with_parameters(run_trial, inputs=...)``)."""
    import ray
    from ray import tune

    os.environ["S2D_PROGRESS"] = "0"  # Tune reports trials; their bars would interleave
    for name in ("ray.train", "ray.tune"):  # not a line per checkpoint in the driver's log
        logging.getLogger(name).setLevel(logging.WARNING)
    trial_id = tune.get_context().get_trial_id()
    config = trial_config(inputs, point, trial_id)
    restore_distillation(Path(config.out), tune.get_checkpoint())

    last: dict[str, float] = {}

    def send(metrics: dict[str, float]) -> None:
        """A report with its checkpoint, uploaded to Tune's storage: a bucket that drops the
        upload is retried with backoff (a restarted trial would lose its progress since the
        last checkpoint)."""
        checkpoint = tune.Checkpoint.from_directory(config.out)
        files.retrying(
            None,
            f"Tune's storage (trial {trial_id}'s report)",
            lambda: tune.report(metrics, checkpoint=checkpoint),
        )

    def report(iteration: int, metrics: dict[str, float]) -> None:
        # FINAL: the searcher takes only a full-budget report as a trial's score
        metrics = {**metrics, "iteration": iteration, FINAL: iteration == config.iterations}
        if iteration == config.iterations:  # after the set is saved: Tune may stop us at once
            last.update(metrics)
            return
        send(metrics)

    tags = {"s2d.search": inputs.space.name, "s2d.trial_id": trial_id}
    tags |= {"s2d.data": inputs.data}  # lineage: what the trial was distilled from
    gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    if gpus:  # under a fractional resources.gpu, several trials name the same one
        tags["s2d.gpu_ids"] = ",".join(gpus)
    if inputs.experts:
        tags["s2d.experts"] = inputs.experts
    if config.static:
        tags["s2d.static"] = config.static
    try:
        run_distillation(
            config,
            inputs.tracking,
            parent_run_id=inputs.parent_run_id,
            tags=tags,
            on_evaluation=report,
            name=f"{run_name(config)} trial {trial_id}",
        )
    except DivergedError as exc:  # a bad point, not a broken search: the searcher learns it
        failed = {"val_top1": 0.0, "stored_mib": exc.stored_mib, "diverged": 1.0}
        tune.report(failed | {"error": str(exc)[:200]})
        return
    send(last)
