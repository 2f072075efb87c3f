"""The evaluation protocol, static/dynamic class groups and result tables."""

from s2d_ray.evaluation.groups import class_groups
from s2d_ray.evaluation.items import as_videos, epoch_draw
from s2d_ray.evaluation.protocol import (
    CROSS_ARCH_DEFAULTS,
    EvalConfig,
    EvalResult,
    evaluate_draw,
    evaluate_real,
    evaluate_set,
    evaluate_synthetic,
    supervised_loss,
    train_network,
    with_own_settings,
)
from s2d_ray.evaluation.report import (
    ResultRow,
    format_table,
    full_data_baseline,
    random_baseline,
    table_columns,
)

__all__ = [
    "CROSS_ARCH_DEFAULTS",
    "EvalConfig",
    "EvalResult",
    "ResultRow",
    "as_videos",
    "class_groups",
    "epoch_draw",
    "evaluate_draw",
    "evaluate_real",
    "evaluate_set",
    "evaluate_synthetic",
    "format_table",
    "full_data_baseline",
    "random_baseline",
    "supervised_loss",
    "table_columns",
    "train_network",
    "with_own_settings",
]
