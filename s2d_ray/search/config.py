"""What a search is asked to do (``s2d tune``'s flags as a config) and the space it runs:
the shipped or given YAML with its overrides, shrunk to seconds for a smoke test. Both the
driver (``tuner``) and the inputs it builds (``inputs``) read it; it imports neither."""

from __future__ import annotations

from pydantic import Field, field_validator

from s2d_ray.config import StrictConfig, absolute_uri
from s2d_ray.methods import METHODS, smoke_settings
from s2d_ray.search.spaces import Choice, SearchSpace, load_space

# --smoke-test: two short trials on a tiny embedded set, every stage exercised
SMOKE_OVERRIDES = [
    "budget.trials=2",
    "budget.iterations=2",
    "budget.eval_every=1",
    "budget.eval_epochs=1",
    "budget.final_epochs=1",
    "budget.final_repeats=1",
]


class SearchConfig(StrictConfig):
    space: str = Field(description="search-space YAML (tune_spaces/)")
    overrides: list[str] = Field(default_factory=list, description="--set section.key=value")
    workdir: str = Field(
        default="work", description="this node's files: trial scratch, best set, MLflow"
    )
    storage: str | None = Field(
        default=None,
        description="what every node reads and writes (s3://... or a shared mount): Tune's "
        "results, the experts, the static memories; default: the workdir (one machine)",
    )
    # Built where missing, by default in <storage> (in <storage>/smoke for a smoke test):
    data: str | None = Field(default=None, description="clip shards; default <storage>/data")
    experts: str | None = Field(default=None, description="expert store; <storage>/experts")
    num_experts: int = Field(default=4, ge=1)
    farm_workers: int = Field(default=2, ge=1, description="parallel expert trainers")
    farm_gpus_per_worker: float | None = Field(
        default=None, ge=0, description="GPUs per expert trainer; None: a trial's resources.gpu"
    )
    static_iterations: int = Field(default=200, ge=1)
    build: bool = Field(default=True, description="False: missing inputs are errors")
    device: str = "auto"
    full_epochs: int = Field(default=0, ge=0, description="also train on all real clips; 0: no")
    smoke: bool = False

    _absolute = field_validator("workdir", "storage", "data", "experts")(absolute_uri)

    @property
    def on_cluster(self) -> bool:
        """Shared storage means trials on other nodes: the head does not train, MLflow must
        be a server they reach, and a lost node's trial is retried elsewhere."""
        return self.storage is not None

    def offload(self, space: SearchSpace) -> bool:
        """Whether the driver's heavy work (static memory, judging) runs as a Ray task with
        a trial's resources: on a cluster, or where trials have a GPU the driver may lack."""
        return self.on_cluster or space.resources.gpu > 0


def load_config_space(config: SearchConfig) -> SearchSpace:
    overrides = [*(SMOKE_OVERRIDES if config.smoke else []), *config.overrides]
    space = load_space(config.space, overrides)
    return smoke_space(space) if config.smoke else space


def smoke_space(space: SearchSpace) -> SearchSpace:
    """The space shrunk to seconds per trial: 1 or 2 student steps on one-epoch experts,
    and the smoke settings of what the space does not search."""
    dims, paper = dict(space.space), [dict(p) for p in space.paper]
    smoke = smoke_settings(METHODS[space.method].Config)
    fixed = {**space.fixed, **{k: v for k, v in smoke.items() if k not in dims}}
    if "syn_steps" in dims:
        dims["syn_steps"] = Choice(type="choice", values=[1, 2])
        for point in paper:
            point["syn_steps"] = 2
    return SearchSpace.model_validate(
        {**space.model_dump(), "space": dims, "fixed": fixed, "paper": paper}
    )
