"""The evaluation protocol, static/dynamic class groups and result tables."""

from s2d_ray.evaluation.groups import class_groups
from s2d_ray.evaluation.protocol import (
    CROSS_ARCH_DEFAULTS,
    EvalConfig,
    EvalResult,
    evaluate_real,
    evaluate_set,
    supervised_loss,
    train_network,
    with_own_settings,
)
from s2d_ray.evaluation.report import (
    ResultRow,
    format_table,
    full_data_baseline,
    random_baseline,
)

__all__ = [
    "CROSS_ARCH_DEFAULTS",
    "EvalConfig",
    "EvalResult",
    "ResultRow",
    "class_groups",
    "evaluate_real",
    "evaluate_set",
    "format_table",
    "full_data_baseline",
    "random_baseline",
    "supervised_loss",
    "train_network",
    "with_own_settings",
]
