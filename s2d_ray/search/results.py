"""After the trials: the best trial (or the Pareto front), its set exported and judged by the
final protocol beside the random-real and full-data rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from s2d_ray.cluster import run_with_resources
from s2d_ray.data import get_dataset
from s2d_ray.distill import judged_rows, log_rows, report_splits
from s2d_ray.evaluation import ResultRow, full_data_baseline
from s2d_ray.methods import RealData
from s2d_ray.models import resolve_device
from s2d_ray.progress import scope
from s2d_ray.search.spaces import SearchSpace
from s2d_ray.search.trial import final_protocol
from s2d_ray.synthetic import load_set
from s2d_ray.synthetic.io import MANIFEST, TENSORS
from s2d_ray.tracking import RunHandle


def random_reference(data: str, space: SearchSpace, device: str) -> float:
    """Random real clips of the trials' size scored as a trial's report is (val split,
    ``budget.eval_epochs``, ``budget.eval_repeats`` networks): the line a trial's val top-1
    is read against, known before the first trial ends."""
    from s2d_ray.data.clips import ClipDataset
    from s2d_ray.evaluation import EvalConfig, random_baseline

    real = RealData.open(data, resolve_device(device))
    budget = space.budget
    protocol = EvalConfig(epochs=budget.eval_epochs, repeats=budget.eval_repeats, seed=space.seed)
    with scope(f"reference: random real ipc {space.ipc} on val"):
        return random_baseline(real, ClipDataset(real.shards, "val"), space.ipc, protocol).mean


def trial_results(grid) -> list[dict[str, Any]]:
    """Each trial's last report with its point, id and checkpoint (errored trials have none).
    The checkpoint holds the set of that report, in Tune's storage: the driver reads it there,
    whichever node ran the trial."""
    results = []
    for result in grid:
        metrics = dict(result.metrics or {})
        if "trial_id" in metrics:
            config = dict(result.config or {})
            results.append({**metrics, "config": config, "checkpoint": result.checkpoint})
    return results


def best_trial(results: list[dict[str, Any]], space: SearchSpace) -> dict[str, Any]:
    """The completed, finite trial with the best last evaluation."""
    done = [
        r
        for r in results
        if r.get("iteration") == space.budget.iterations and not r.get("diverged")
    ]
    if not done:
        raise RuntimeError(
            f"none of the {len(results)} trials ran its {space.budget.iterations} iterations "
            "without diverging; widen the space or lower the learning rates"
        )
    sign = 1 if space.objective.mode == "max" else -1
    done.sort(key=lambda r: r["trial_id"])  # ties go to the same trial on every re-run
    return max(done, key=lambda r: sign * r[space.objective.metric])


def pareto_front(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed trials no other beats on both accuracy (higher) and stored MiB (lower)."""
    done = [r for r in results if "stored_mib" in r and not r.get("diverged")]
    front = [
        r
        for r in done
        if not any(
            o["val_top1"] >= r["val_top1"]
            and o["stored_mib"] <= r["stored_mib"]
            and (o["val_top1"], o["stored_mib"]) != (r["val_top1"], r["stored_mib"])
            for o in done
        )
    ]
    return sorted(front, key=lambda r: r["stored_mib"])


def export_best(checkpoint, best: Path) -> str:
    """The best trial's distilled set, from its last checkpoint into ``best``
    (``load_distilled(best)``)."""
    best.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as saved:
        for file in (MANIFEST, TENSORS):
            shutil.copy2(Path(saved) / file, best / file)
    return str(best)


def judge_best(best_set, trial_id, data, space, config, run) -> list:
    """The full protocol on the best set, logged on the search's run ``run`` and on the
    best trial's own run. Its figures are kept beside the set: a finished search re-run
    reports them, unless it now asks for another protocol, which judges the set again."""
    cache = Path(best_set) / "search_evaluation.json"
    eval_config = final_protocol(space)
    protocol = eval_config.model_dump(mode="json")
    key = {"trial_id": trial_id, "protocol": protocol, "full_epochs": config.full_epochs}
    # tags, not params: a finished search may be judged again by another protocol
    judged_by = {"s2d.final_epochs": eval_config.epochs, "s2d.final_repeats": eval_config.repeats}
    run.set_tags(judged_by)
    if cache.exists():
        saved = json.loads(cache.read_text())
        if all(saved.get(k) == v for k, v in key.items()):
            return [ResultRow.from_dict(d, saved["groups"]) for d in saved["rows"]]
    synthetic, manifest = load_set(best_set)
    name = f"best {space.method} ipc {space.ipc}"
    rows = run_with_resources(
        judged_table,
        synthetic,
        manifest,
        name,
        data,
        space.ipc,
        eval_config,
        config.full_epochs,
        config.device,
        cpu=space.resources.cpu,
        gpu=space.resources.gpu,
        remote=config.offload(space),
    )
    log_rows(rows, run)
    if manifest.get("mlflow_run_id"):
        best_run = RunHandle(run.tracker, manifest["mlflow_run_id"])
        log_rows(rows, best_run)
        best_run.set_tags(judged_by)
    saved = {**key, "groups": rows[0].groups, "rows": [r.to_dict() for r in rows]}
    cache.write_text(json.dumps(saved))
    return rows


def judged_table(synthetic, manifest, name, data, ipc, eval_config, full_epochs, device) -> list:
    """The set's row and random real's of the same size, and the full data's when
    ``full_epochs``: the work of judging, which runs where a trial would."""
    real = RealData.open(data, resolve_device(device))
    own = manifest.get("eval", {})
    rows = judged_rows(synthetic, own, real, ipc, eval_config, manifest["bytes"], name)
    if full_epochs:
        test, also = report_splits(real)
        full = eval_config.model_copy(update={"epochs": full_epochs, "repeats": 1})
        flip = get_dataset(real.shards.manifest["dataset"]).flip
        with scope(f"judging the full real data ({full_epochs} epochs)"):
            result = full_data_baseline(real, test, full, flip=flip, also=also)
        rows.append(ResultRow("full real data", result, None, rows[0].groups))
    return rows
