"""Search spaces: one YAML per dataset, IPC and method, shipped in the package as
``s2d_ray/tune_spaces/<dataset>_ipc<k>_<method>.yaml`` (``s2d spaces ls`` lists them, ``s2d
spaces cp`` copies one to edit), validated before any trial starts.

    space = load_space(find_space("embedded_ipc1_s2d-mtt"), ["budget.trials=12"])

A file names what Optuna searches (``space``: log-uniform learning rates, integer or choice
step counts, optionally ``spc:dpc``, the stills and dynamic maps per synthetic video as in
supplementary Table 8: ``"2:1"`` at IPC k means spc = 2k, dpc = k), what stays ``fixed``,
the paper's values as the first points to evaluate (``paper``, SPEC §6), the ``budget``, the
``scheduler``, the ``objective`` and the ``resources`` of a trial. Every error names the file
and the key.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from s2d_ray.config import StrictConfig

# What a space may search besides the method's own config fields: the memory's shape.
MEMORY_KEYS = {"spc:dpc"}
SPACES_DIR = Path(__file__).resolve().parents[1] / "tune_spaces"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Range(_Frozen):
    kinds: ClassVar[tuple[type, ...]]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, self.kinds) and self.low <= value <= self.high


class LogUniform(_Range):
    kinds = (int, float)
    type: Literal["loguniform"]
    low: float = Field(gt=0)
    high: float = Field(gt=0)


class IntRange(_Range):
    kinds = (int,)
    type: Literal["int"]
    low: int = Field(ge=1)
    high: int = Field(ge=1)
    log: bool = False


class Choice(_Frozen):
    type: Literal["choice"]
    values: list[int | float | str] = Field(min_length=2)

    def contains(self, value: Any) -> bool:
        return value in self.values


Dimension = Annotated[LogUniform | IntRange | Choice, Field(discriminator="type")]


class Budget(_Frozen):
    trials: int = Field(default=12, ge=1)
    iterations: int = Field(default=200, ge=1, description="distillation iterations per trial")
    eval_every: int = Field(default=50, ge=1, description="iterations between evaluations")
    eval_epochs: int = Field(default=100, ge=1, description="epochs of a periodic evaluation")
    eval_repeats: int = Field(
        default=1,
        ge=1,
        description="fresh networks a periodic evaluation averages: more give the scheduler "
        "and the sampler a steadier signal, each at another network's training",
    )
    final_epochs: int = Field(default=500, ge=1, description="epochs of the best's re-evaluation")
    final_repeats: int = Field(default=3, ge=1)
    max_concurrent: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _evaluates(self):
        if self.eval_every > self.iterations:
            raise ValueError(
                f"eval_every ({self.eval_every}) exceeds iterations ({self.iterations}): "
                "the scheduler would never see a result"
            )
        return self


class Scheduler(_Frozen):
    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(default=1, ge=1, description="evaluations before a trial may stop")
    reduction_factor: float = Field(default=2.0, gt=1)


class Searcher(_Frozen):
    type: Literal["tpe", "gp", "random"] = Field(
        default="tpe",
        description="Optuna's TPE sampler, its Gaussian-process one (gp: Bayesian optimisation "
        "proper, made for budgets of tens of trials), or uniform random (a baseline)",
    )
    startup_trials: int | None = Field(
        default=None,
        ge=1,
        description="random trials before the sampler models the results; default: a quarter "
        "of the budget, 2 to 10 (Optuna's own 10 would leave a 12-trial search random)",
    )
    seed: int | None = Field(
        default=None,
        description="the sampler's seed; default: the space's seed. Another searcher seed "
        "proposes other points while every trial keeps its seed (its initialisations and "
        "evaluation network), so two searches differ only in what they chose to try",
    )
    shared_study: bool = Field(
        default=True,
        description="propose from every earlier trial of the same problem (the Optuna study "
        "kept in the search's storage); false: this search starts from nothing, as a "
        "benchmark of searchers needs",
    )

    def startup(self, trials: int) -> int:
        return self.startup_trials or max(2, min(10, trials // 4))


class Objective(_Frozen):
    # the validation split's top-1: nothing a search chooses or stops on reads test
    metric: Literal["val_top1"] = "val_top1"
    mode: Literal["max"] = "max"
    pareto_bytes: bool = Field(
        default=False, description="also minimise stored MiB (multi-objective, no scheduler)"
    )


class Resources(_Frozen):
    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0, le=1, description="fractions share one GPU")


class SearchSpace(StrictConfig):
    dataset: str
    ipc: int = Field(ge=1)
    method: str
    space: dict[str, Dimension] = Field(min_length=1)
    fixed: dict[str, Any] = Field(default_factory=dict)
    paper: list[dict[str, Any]] = Field(default_factory=list)
    budget: Budget = Budget()
    searcher: Searcher = Searcher()
    scheduler: Scheduler = Scheduler()
    objective: Objective = Objective()
    resources: Resources = Resources()
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self):
        from s2d_ray.data import DATASETS
        from s2d_ray.methods import METHODS

        if self.dataset not in DATASETS:
            raise ValueError(f"dataset {self.dataset!r} is not one of {sorted(DATASETS)}")
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {sorted(METHODS)}")
        fields = set(METHODS[self.method].Config.model_fields)
        for section, keys in (("space", self.space), ("fixed", self.fixed)):
            unknown = sorted(set(keys) - fields - MEMORY_KEYS)
            if unknown:
                raise ValueError(
                    f"{section}: {unknown} are not settings of {self.method} "
                    f"(known: {sorted(fields | MEMORY_KEYS)})"
                )
        both = sorted(set(self.space) & set(self.fixed))
        if both:
            raise ValueError(f"{both} are both searched (space) and fixed")
        if "spc:dpc" in self.space or "spc:dpc" in self.fixed:
            if not METHODS[self.method].needs_static:
                raise ValueError(f"spc:dpc applies to S2D methods, not {self.method}")
            if "spc:dpc" in self.space:
                _check_ratios(self.space["spc:dpc"])
        for i, point in enumerate(self.paper):
            if set(point) != set(self.space):
                raise ValueError(
                    f"paper[{i}] names {sorted(point)}, the space {sorted(self.space)}: a first "
                    "point must give every searched value"
                )
            for key, value in point.items():
                if not self.space[key].contains(value):
                    raise ValueError(f"paper[{i}].{key} = {value!r} lies outside the space")
        if self.objective.pareto_bytes and self.scheduler.type != "fifo":
            raise ValueError("objective.pareto_bytes needs scheduler.type: fifo (no early stops)")
        config = METHODS[self.method].Config
        for point in [*self.paper, self.corner("low"), self.corner("high")]:
            settings, _ = self.trial_settings(point)
            try:
                config.model_validate(settings)
            except ValidationError as exc:
                first = exc.errors()[0]
                raise ValueError(
                    f"{self.method} refuses {'.'.join(map(str, first['loc']))} = "
                    f"{first.get('input')!r} ({first['msg']}) at the point {point}"
                ) from None
        return self

    def corner(self, end: Literal["low", "high"]) -> dict[str, Any]:
        """The point at every dimension's low (or high) end: a cheap check of the ranges."""
        point = {}
        for key, dim in self.space.items():
            point[key] = (
                dim.values[0 if end == "low" else -1]
                if isinstance(dim, Choice)
                else (dim.low if end == "low" else dim.high)
            )
        return point

    def trial_settings(self, point: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
        """A point of the space as (the method's settings, spc of its static memory or None):
        ``spc:dpc`` (per synthetic video) becomes the static memory's spc and the method's dpc."""
        settings = {**self.fixed, **point}
        spc = None
        if "spc:dpc" in settings:
            per_video = memory_shape(settings.pop("spc:dpc"))
            spc, settings["dpc"] = (n * self.ipc for n in per_video)
        return settings, spc

    @property
    def name(self) -> str:
        return f"{self.dataset}_ipc{self.ipc}_{self.method}"


def _check_ratios(dimension) -> None:
    if not isinstance(dimension, Choice) or not all(
        isinstance(v, str) and _ratio(v) for v in dimension.values
    ):
        raise ValueError("space.spc:dpc must be a choice of 'spc:dpc' strings, e.g. ['1:1', '2:2']")


def _ratio(text: str) -> tuple[int, int] | None:
    parts = text.split(":")
    if len(parts) == 2 and all(p.isdigit() for p in parts) and int(parts[0]) >= 1:
        return int(parts[0]), int(parts[1])
    return None


def memory_shape(text: str) -> tuple[int, int]:
    """``"2:1"`` → (2, 1) stills and dynamic maps per synthetic video."""
    ratio = _ratio(text) if isinstance(text, str) else None
    if ratio is None:
        raise ValueError(f"spc:dpc must look like '2:1', got {text!r}")
    return ratio


_SECTIONS: dict[str, type[BaseModel]] = {
    "budget": Budget,
    "searcher": Searcher,
    "scheduler": Scheduler,
    "objective": Objective,
    "resources": Resources,
}


class SpaceError(ValueError):
    """A search-space file that does not load or validate; the message names file and key."""


def shipped_spaces() -> dict[str, Path]:
    """Every space the package ships, by name (``quickstart/embedded_ipc1_s2d-mtt``)."""
    return {
        str(path.relative_to(SPACES_DIR).with_suffix("")): path
        for path in sorted(SPACES_DIR.rglob("*.yaml"))
    }


def find_space(name: str | Path) -> Path:
    """A shipped space's name, or a YAML file's path."""
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise SpaceError(f"{path}: no such search-space file")
        return path
    spaces = shipped_spaces()
    if str(name) in spaces:
        return spaces[str(name)]
    close = difflib.get_close_matches(str(name), spaces, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise SpaceError(f"no search space named {name!r}: {hint}`s2d spaces ls` lists them")


# A dataset without a shipped space borrows one: a small one (fewer training videos than
# this) the embedded set's, sized for minutes per trial; a larger one the shipped space of
# the paper's dataset with its clip format.
SMALL_DATASET_VIDEOS = 1000
TEMPLATE_BY_FRAMES = {16: "miniucf", 8: "kinetics400"}


def space_name(dataset: str, ipc: int, method: str) -> str:
    return f"{dataset}_ipc{ipc}_{method}"


def space_for_data(
    ipc: int, method: str, manifest: dict, out_dir: str | Path
) -> tuple[Path, str | None]:
    """The shipped space for the shards' dataset, or one derived for it (written into
    ``out_dir``, to read and edit); the second item says where a derived one comes from."""
    dataset = manifest["dataset"]
    shipped = shipped_spaces()
    own = space_name(dataset, ipc, method)
    if own in shipped:
        return shipped[own], None
    videos = manifest["counts"]["train"]["videos"]
    frames = manifest["clip_shape"][0]
    template = (
        "embedded" if videos < SMALL_DATASET_VIDEOS else TEMPLATE_BY_FRAMES.get(frames, "miniucf")
    )
    source = shipped.get(space_name(template, ipc, method))
    if source is None:
        raise SpaceError(
            f"no search space ships for {method} at ipc {ipc}: write one (`s2d spaces cp "
            f"{space_name(template, 1, method)} my.yaml`, then edit it) and pass --space"
        )
    data = yaml.safe_load(source.read_text())
    data["dataset"] = dataset
    why = (
        f"{videos} training videos, fewer than {SMALL_DATASET_VIDEOS}: small budgets"
        if template == "embedded"
        else f"{frames}-frame clips like {template}'s"
    )
    out = Path(out_dir) / f"{own}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Derived for {dataset} from {source.name} ({why}) by `s2d tune`.\n"
        "# Edit it and pass it back with --space.\n"
    )
    out.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return out, f"{source.stem} ({why})"


def load_space(path: str | Path, overrides: list[str] | None = None) -> SearchSpace:
    """Read, override (``section.key=value``, values parsed as YAML) and validate a space."""
    path = find_space(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpaceError(f"{path}: no such search-space file (`s2d spaces ls`)") from None
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    for item in overrides or []:
        _override(data, item, path)
    _numbers(data)
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise SpaceError(f"{path}: {problems}") from None


def settable_keys(space_data: dict) -> list[str]:
    """Every key ``--set`` may name: the sections' fields and the keys the file has."""
    keys = {f"{name}.{field}" for name, model in _SECTIONS.items() for field in model.model_fields}
    keys |= {k for k in SearchSpace.model_fields if k not in _SECTIONS and k != "space"}
    for section in ("space", "fixed"):
        keys |= {f"{section}.{k}" for k in space_data.get(section) or {}}
    return sorted(keys)


def _override(data: dict, item: str, path: Path) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise SpaceError(f"--set {item!r}: expected section.key=value, e.g. budget.trials=24")
    known = settable_keys(data)
    # a new key is welcome only where a section holds free keys: fixed method settings
    under = key in known or any(key.startswith(k + ".") for k in known)
    if not under and not key.startswith("fixed."):
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise SpaceError(f"--set {key}: no such key ({hint}keys: {', '.join(known)})")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpaceError(f"{path}: --set {key}: {part} is not a section")
    value = yaml.safe_load(text)
    if ":" in text and isinstance(value, int):  # YAML 1.1 reads 2:2 as base 60 (122)
        value = text
    node[leaf] = value


def _numbers(node: Any) -> Any:
    """YAML 1.1 reads ``1e-6`` (no dot) as a string: read such strings as the floats meant."""
    if isinstance(node, dict):
        for k, v in node.items():
            node[k] = _numbers(v)
    elif isinstance(node, list):
        return [_numbers(v) for v in node]
    elif isinstance(node, str):
        try:
            value = float(node)
        except ValueError:
            return node
        return value if math.isfinite(value) and ("e" in node.lower()) else node
    return node
