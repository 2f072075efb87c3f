"""One distillation run, top to bottom: check inputs, build the method, resume, iterate,
checkpoint, evaluate, save, report, track.

    summary = run_distillation(DistillConfig(method="s2d-dm", data=..., out=..., ipc=1,
                                             static=...), tracking)

The output folder is the distilled set itself (``load_distilled(out)`` reads it) plus
``checkpoint/`` while the run is unfinished and ``evaluation.json`` once it is judged.
Re-running the same command resumes from the last checkpoint and ends bit-identical (CPU) to
an uninterrupted run; a NaN or infinite loss stops the run, naming the iteration, and keeps
the last good checkpoint.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from s2d_ray import __version__, files
from s2d_ray.config import StrictConfig, absolute_uri, config_fingerprint
from s2d_ray.data.clips import ClipDataset
from s2d_ray.evaluation import (
    EvalConfig,
    EvalResult,
    ResultRow,
    as_videos,
    class_groups,
    evaluate_synthetic,
    random_baseline,
    table_columns,
    with_own_settings,
)
from s2d_ray.methods import (
    METHODS,
    STATIC_METHODS,
    DistillContext,
    DistillMethod,
    RealData,
    get_method,
    paper_defaults,
)
from s2d_ray.methods.checkpoint import load_checkpoint, save_checkpoint
from s2d_ray.methods.hyperparameters import paper_iterations
from s2d_ray.models import resolve_device
from s2d_ray.progress import Progress, note, scope
from s2d_ray.synthetic import SyntheticSet, load_set, save_set
from s2d_ray.synthetic.io import MANIFEST, TENSORS
from s2d_ray.tracking import RunHandle, Tracker, TrackingConfig, Usage
from s2d_ray.tracking.previews import class_gifs, frame_difference_png, grid_png

MIB = 2**20
LOSS_FLUSH_SECONDS = 5.0


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept. Carries the set's
    stored size, which a search on accuracy against MiB still needs for the failed point."""

    def __init__(self, message: str, stored_mib: float = math.nan) -> None:
        super().__init__(message)
        self.stored_mib = stored_mib


class DistillConfig(StrictConfig):
    method: str
    data: str
    out: str
    ipc: int = Field(ge=1, description="videos per class (images per class for static)")
    stage: Literal["video", "static"] = "video"
    iterations: int | None = Field(
        default=None, ge=0, description="None: the paper's budget for the method (SPEC §6)"
    )
    eval_every: int = Field(default=0, ge=0, description="0: evaluate at the end only")
    eval_repeats_during: int = Field(default=1, ge=1)
    checkpoint_every: int = Field(default=50, ge=1)
    static: str | None = Field(default=None, description="static memory (S2D methods)")
    method_config: dict = Field(default_factory=dict, description="overrides of paper defaults")
    eval: EvalConfig = EvalConfig()
    final_eval: bool = True
    storage_dtype: Literal["float32", "float16"] = "float32"
    device: str = "auto"
    seed: int = 0

    _absolute = field_validator("data", "out", "static")(absolute_uri)

    @model_validator(mode="before")
    @classmethod
    def _paper_iterations(cls, data):
        if isinstance(data, dict) and data.get("iterations") is None and "method" in data:
            static = data.get("stage") == "static"
            name = f"static-{data['method']}" if static else data["method"]
            data = {**data, "iterations": paper_iterations(name)}
        return data

    @property
    def registry(self) -> dict[str, type[DistillMethod]]:
        return STATIC_METHODS if self.stage == "static" else METHODS

    def resume_key(self, data_fingerprint: str, method_config: StrictConfig) -> str:
        """What a checkpoint must match: all that shapes the synthetic set's trajectory (not
        the number of iterations, so a finished run can be extended)."""
        return config_fingerprint(
            {
                "method": self.method,
                "stage": self.stage,
                "data": data_fingerprint,
                "ipc": self.ipc,
                "static": self.static,
                "seed": self.seed,
                "method_config": method_config.model_dump(mode="json"),
            }
        )


def resolve_method_config(config: DistillConfig, real: RealData) -> StrictConfig:
    """The method's config: its defaults, then the paper's values for this dataset and ipc,
    then the user's overrides. Unknown keys and invalid values fail here, before any work."""
    cls = get_method(config.method, config.registry)
    name = f"static-{config.method}" if config.stage == "static" else config.method
    paper = paper_defaults(name, real.shards.manifest["dataset"], config.ipc, real.clip_shape[0])
    known = {k: v for k, v in paper.items() if k in cls.Config.model_fields}
    return cls.Config.model_validate({**known, **config.method_config})


@dataclass
class DistillSummary:
    out: str
    method: str
    iterations_run: int
    resumed_from: int | None
    seconds: float
    storage_bytes: int
    rows: list[ResultRow] = field(default_factory=list)
    run_id: str | None = None
    losses: list[float] = field(default_factory=list)


# called after each periodic evaluation with (iteration, metrics); a search reports it to Tune
OnEvaluation = Callable[[int, dict[str, float]], None]


def run_distillation(
    config: DistillConfig,
    tracking: TrackingConfig,
    *,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    on_evaluation: OnEvaluation | None = None,
    name: str | None = None,
) -> DistillSummary:
    """One distillation run: build, resume, iterate, save, judge, track. A search trial
    passes its parent MLflow run, its tags, a hook that sees every periodic evaluation and
    its run's ``name`` (default: ``run_name(config)``)."""
    device = resolve_device(config.device)
    usage = Usage(device)  # wall time and peak memory, logged with every evaluation
    real = RealData.open(config.data, device, normalize=config.eval.normalize)
    method_cls = get_method(config.method, config.registry)
    method_config = resolve_method_config(config, real)
    static, static_manifest = _static_memory(config, method_cls)
    context = DistillContext(
        real, config.ipc, config.seed, static, static_manifest, iterations=config.iterations
    )
    method = method_cls(method_config, context)
    key = config.resume_key(real.shards.fingerprint, method_config)
    last = load_checkpoint(config.out, method, key) if method.iterative else None
    start = 0 if last is None else last + 1

    run_tags = {
        "s2d.role": config.stage,
        "s2d.method": config.method,
        "s2d.ipc": config.ipc,
        "s2d.dataset": real.shards.manifest["dataset"],
        "s2d.seed": config.seed,
    }
    run_tags |= tags or {}
    if static_manifest.get("mlflow_run_id"):
        run_tags["s2d.static_run"] = static_manifest["mlflow_run_id"]
    # One MLflow run per output folder: the checkpoint's key alone would let another search's
    # trial at the same point (or a run into another folder) reopen this run.
    run_key = config_fingerprint({"checkpoint": key, "out": config.out})
    note(plan(config, real, start, method))
    with Tracker(tracking).start_run(
        name or run_name(config),
        parent_run_id=parent_run_id,
        tags=run_tags,
        resume_key=f"distill/{run_key}",
    ) as run:
        params = config.model_dump(mode="json", exclude={"method_config", "eval"})
        params |= {f"method.{k}": v for k, v in method_config.model_dump().items()}
        params |= {f"eval.{k}": v for k, v in config.eval.model_dump().items()}
        run.log_params(params)
        run.log_input_manifest(
            real.shards.manifest,
            name=real.shards.manifest["dataset"],
            digest=real.shards.fingerprint,
            source=config.data,
        )

        def publish(step: int) -> dict:
            """Save the set as it is now and log it with its previews: at the end, and at
            each periodic evaluation (before a search's report: its scheduler may stop the
            trial at once)."""
            meta = _provenance(config, method_config, real, static_manifest, run.run_id)
            meta["eval"] = method.eval_overrides()
            manifest = save_set(method.synthetic, config.out, meta, dtype=config.storage_dtype)
            _log_previews(method.synthetic, real, run, config.eval.normalize, step)
            for name in (MANIFEST, TENSORS):  # the set, not its checkpoint
                run.log_artifact(files.join(config.out, name), "distilled")
            return manifest

        losses = []
        if method.iterative:
            losses = _iterate(config, method, key, start, run, usage, on_evaluation, publish)
        manifest = publish(config.iterations if method.iterative else 0)
        summary = DistillSummary(
            config.out,
            config.method,
            len(losses),
            last,
            0.0,
            manifest["bytes"],
            run_id=run.run_id,
            losses=losses,
        )
        if config.final_eval:
            summary.rows = judge(config, method, real, manifest["bytes"], run)
        used = usage.metrics()
        summary.seconds = used["seconds"]
        step = config.iterations if method.iterative else None  # MLflow's latest: the last step
        run.log_metrics(used | {"stored_mib": manifest["bytes"] / MIB}, step=step)
    return summary


def run_name(config: DistillConfig) -> str:
    """What a run is, as its MLflow name and its progress label: ``static-dm spc1``."""
    if config.stage == "static":
        return f"static-{config.method} spc{config.ipc}"
    return f"{config.method} ipc{config.ipc}"


def plan(config: DistillConfig, real: RealData, start: int, method: DistillMethod) -> str:
    """What the run will do, said before it starts (the first progress line gives its pace)."""
    iterative = method.iterative
    t, _, h, w = real.clip_shape
    what = f"{run_name(config)} on {real.shards.manifest['dataset']}"
    what += f" ({real.num_classes} classes, clips {t}x{h}x{w})"
    if iterative:
        what += f": {config.iterations} iterations"
        if start:
            what += f", resuming after {start}"
        if config.eval_every:
            what += f", a val evaluation every {config.eval_every}"
    if config.final_eval:
        e = config.eval
        own = with_own_settings(e, method.eval_overrides()).epochs  # e.g. FRePo's 1000
        epochs = f"{own}" if own == e.epochs else f"{own} (random real: {e.epochs})"
        what += (
            f"; then judged: {e.repeats} networks x {epochs} epochs on the set and on "
            f"random real clips of its size (--eval-epochs/--eval-repeats; --no-eval skips)"
        )
    return what


def _iterate(
    config: DistillConfig,
    method: DistillMethod,
    key: str,
    start: int,
    run: RunHandle,
    usage: Usage,
    on_evaluation: OnEvaluation | None = None,
    publish: Callable[[int], dict] | None = None,
) -> list[float]:
    """The optimisation loop: step, guard, checkpoint, evaluate now and then (the last
    iteration too when no final evaluation follows: a search ranks trials by it), and
    ``publish`` the set before ``on_evaluation`` sees a result mid-run."""
    losses, pending = [], []
    flushed = time.monotonic()
    bar = Progress(config.iterations, run_name(config), unit="it", start=start)
    for iteration in range(start, config.iterations):
        metrics = method.step(iteration)
        bar.update(loss=metrics["loss"])
        if not math.isfinite(metrics["loss"]) or not _finite(method):
            bar.close()
            run.log_metric_steps(pending)
            kept = (
                "no checkpoint yet"
                if iteration < config.checkpoint_every
                else (
                    f"the checkpoint of iteration {iteration - iteration % config.checkpoint_every}"
                    f" is kept in {config.out}/checkpoint"
                )
            )
            what = f"the loss is {metrics['loss']}"
            if math.isfinite(metrics["loss"]):
                what = "the learnt tensors became non-finite"
            raise DivergedError(
                f"{config.method}: {what} at iteration {iteration + 1}; stopped ({kept}). "
                "Lower the learning rates and re-run.",
                method.synthetic.storage_bytes(config.storage_dtype) / MIB,
            )
        losses.append(metrics["loss"])
        pending.append((iteration + 1, metrics, time.time()))
        done = iteration + 1
        checkpoint = done % config.checkpoint_every == 0 or done == config.iterations
        if checkpoint:
            save_checkpoint(config.out, method, iteration, key)
        # the loss reaches MLflow as it goes: one batched request every few seconds
        if checkpoint or time.monotonic() - flushed >= LOSS_FLUSH_SECONDS:
            run.log_metric_steps(pending)
            pending, flushed = [], time.monotonic()
        periodic = config.eval_every and done % config.eval_every == 0
        last = done == config.iterations and config.eval_every and not config.final_eval
        if (periodic and done < config.iterations) or last:
            quick = with_own_settings(
                config.eval.model_copy(update={"repeats": config.eval_repeats_during}),
                method.eval_overrides(),
            )
            # every choice made from this (ASHA, the best trial) reads val, never test
            result = evaluate_items(method.synthetic, method.context.real, quick, split="val")
            evaluation = {
                "val_top1": result.mean,
                "val_top1_std": result.std,
                "val_top5": result.top5_mean,
                "stored_mib": method.synthetic.storage_bytes(config.storage_dtype) / MIB,
            }
            # A search's scheduler may stop the run at the report: log what it used first.
            run.log_metrics(evaluation | usage.metrics(), step=done)
            if publish is not None and done < config.iterations:  # the end publishes
                publish(done)
            if on_evaluation is not None:
                on_evaluation(done, {**metrics, **evaluation})
            bar.show(val_top1=f"{100 * result.mean:.1f}%")
    bar.close()
    return losses


def _finite(method: DistillMethod) -> bool:
    """A finite loss can still leave NaN in the set (a step on a non-finite gradient)."""
    with torch.no_grad():
        return all(bool(torch.isfinite(p).all()) for p in method.learnable())


def evaluate_items(
    synthetic: SyntheticSet, real: RealData, config: EvalConfig, *, split: str
) -> EvalResult:
    """The protocol on ``synthetic``, scored on ``split`` (val for choices, test to report)."""
    scored = ClipDataset(real.shards, split)
    return evaluate_synthetic(synthetic, scored, config, device=real.device)


def report_splits(real: RealData) -> tuple[ClipDataset, list[ClipDataset]]:
    """A final table's splits: test, read once for the report, and val beside it (where the
    shards have one), the score every choice was made on."""
    test = ClipDataset(real.shards, "test")
    has_val = any(s["split"] == "val" for s in real.shards.manifest["shards"])
    return test, [ClipDataset(real.shards, "val")] if has_val else []


def judged_rows(
    synthetic: SyntheticSet,
    own: dict,
    real: RealData,
    ipc: int,
    config: EvalConfig,
    stored_bytes: int,
    name: str,
) -> list[ResultRow]:
    """The full protocol on ``synthetic`` (at its own settings where ``config`` leaves them,
    e.g. MTT's learned lr), beside the same-size random real baseline at the protocol's:
    scored on test, with the same networks' val score beside it."""
    test, also = report_splits(real)
    groups = class_groups(real.shards, seed=config.seed, device=real.device)
    own_config = with_own_settings(config, own)
    with scope(f"judging {name}"):
        result = evaluate_synthetic(synthetic, test, own_config, device=real.device, also=also)
    with scope(f"judging random real ipc {ipc}"):
        baseline = random_baseline(real, test, ipc, config, also)
    t, c, h, w = real.clip_shape
    videos_bytes = 4 * real.num_classes * ipc * t * c * h * w  # as float32 videos
    return [
        ResultRow(name, result, stored_bytes / MIB, groups),
        ResultRow(f"random real ipc {ipc}", baseline, videos_bytes / MIB, groups),
    ]


def log_rows(rows: list[ResultRow], run: RunHandle, out: str | None = None) -> None:
    """The judged set's and the baseline's figures as metrics (and ``evaluation.json``)."""
    for row, prefix in zip(rows, ("final", "random_baseline"), strict=False):
        d = row.to_dict()
        split = row.result.split  # every logged figure names the split it was scored on
        run.log_metrics(
            {
                f"{prefix}_{split}_top1_mean": d["mean"],
                f"{prefix}_{split}_top1_std": d["std"],
                f"{prefix}_{split}_top5_mean": d["top5_mean"],
                f"{prefix}_{split}_static_mean": d.get("static_mean", math.nan),
                f"{prefix}_{split}_dynamic_mean": d.get("dynamic_mean", math.nan),
                **{
                    f"{prefix}_{other}_top1_mean": row.result.also_mean(other)
                    for other in row.result.also
                },
            }
        )
    run.log_table(table_columns(rows), "results/table.json")
    if out is not None:
        fs, root = files.filesystem(out)
        files.write_json(
            fs,
            files.join(root, "evaluation.json"),
            {"rows": [r.to_dict() for r in rows], "groups": rows[0].groups},
        )


def judge(
    config: DistillConfig,
    method: DistillMethod,
    real: RealData,
    stored_bytes: int,
    run: RunHandle,
) -> list[ResultRow]:
    name = f"{config.method} ipc {config.ipc}"
    own = method.eval_overrides()
    rows = judged_rows(method.synthetic, own, real, config.ipc, config.eval, stored_bytes, name)
    log_rows(rows, run, config.out)
    return rows


def _static_memory(
    config: DistillConfig, method_cls: type[DistillMethod]
) -> tuple[SyntheticSet | None, dict]:
    if not method_cls.needs_static:
        return None, {}
    if not config.static:
        raise ValueError(
            f"{config.method} needs a static memory: pass --static DIR, made by "
            "`s2d static --data SHARDS --out DIR --spc K`"
        )
    static, manifest = load_set(config.static)
    if manifest["kind"] != "images":
        raise ValueError(f"--static {config.static} holds a {manifest['kind']} set, not images")
    return static, manifest


def _provenance(config, method_config, real: RealData, static_manifest: dict, run_id) -> dict:
    parents = {}
    if config.static:
        parents["static"] = config.static
    return {
        "method": config.method,
        "stage": config.stage,
        "config": config.model_dump(mode="json"),
        "method_config": method_config.model_dump(mode="json"),
        "seed": config.seed,
        "ipc": config.ipc,
        "dataset": {
            "name": real.shards.manifest["dataset"],
            "fingerprint": real.shards.fingerprint,
            "classes": real.shards.classes,
            "source": config.data,
        },
        "clip_shape": list(real.clip_shape),
        "normalize": config.eval.normalize,
        "parents": parents,
        "mlflow_run_id": run_id,
        "created_by": f"s2d-ray {__version__}",
    }


def _log_previews(
    synthetic: SyntheticSet, real: RealData, run: RunHandle, normalize, step: int
) -> None:
    """The set as pictures: artefacts of its latest state, and the grid as an image per
    step, so the UI shows how it changed."""
    if not run.active:
        return
    items, labels = as_videos(synthetic, real.clip_shape[0])
    names = real.shards.classes
    with tempfile.TemporaryDirectory(prefix="s2d-previews-") as tmp:
        folder = Path(tmp)
        grid_png(items, labels, folder / "grid.png", normalize, names)
        frame_difference_png(items, labels, folder / "frame-differences.png", normalize, names)
        class_gifs(items, labels, folder / "gifs", names, normalize)
        run.log_artifact(folder, "previews")
        run.log_image(folder / "grid.png", "synthetic-grid", step)
