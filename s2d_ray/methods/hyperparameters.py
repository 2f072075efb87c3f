"""The paper's hyperparameters (supplementary Tables 10-12, SPEC §6), used as defaults, and
the settings ``--smoke-test`` shrinks them to (SMOKE).

Looked up by (method, dataset, ipc); static-learning methods are named ``static-<name>``.
UCF101 uses MiniUCF's values. Datasets the paper did not run take
the values of the paper's dataset with the same clip format: 16-frame sets MiniUCF's, 8-frame
sets (the embedded default included) SSv2's. IPC other than 1 and 5 takes IPC 1's values
below 5 and IPC 5's from 5 on.
"""

from __future__ import annotations

# (dataset, ipc) -> {method: {setting: value}}
_TABLE: dict[tuple[str, int], dict[str, dict[str, float]]] = {
    ("miniucf", 1): {
        "dm": {"lr_img": 30.0, "batch_real": 64},
        # the one cell run with the larger H (SPEC §3, §6)
        "s2d-dm": {
            "lr_dynamic": 1e-4,
            "lr_hal": 1e-5,
            "batch_real": 64,
            "integrator": "conv3d_tconv",
        },
        # the paper: a frozen syn_lr scored higher here
        "mtt": {"lr_img": 1e5, "batch_syn": 50, "syn_steps": 10, "learn_syn_lr": False},
        "s2d-mtt": {"lr_dynamic": 1e4, "lr_hal": 1e-3, "batch_syn": 50, "syn_steps": 10},
        "frepo": {"lr_img": 1e-3},
        "s2d-frepo": {"lr_dynamic": 1e-4, "lr_hal": 1e-3},
    },
    ("miniucf", 5): {
        "dm": {"lr_img": 100.0, "batch_real": 64},
        "s2d-dm": {"lr_dynamic": 1e3, "lr_hal": 1e-6, "batch_real": 64},
        "mtt": {"lr_img": 1e5, "batch_syn": 128, "syn_steps": 5},
        "s2d-mtt": {
            "lr_dynamic": 1e4,
            "lr_hal": 1e-3,
            "batch_syn": 128,
            "syn_steps": 5,
            "learn_syn_lr": False,
        },
        "frepo": {"lr_img": 1e-3},
        "s2d-frepo": {"lr_dynamic": 1e-1, "lr_hal": 1e-3},
    },
    ("hmdb51", 1): {
        "dm": {"lr_img": 30.0, "batch_real": 64},
        "s2d-dm": {"lr_dynamic": 10.0, "lr_hal": 1e-6, "batch_real": 64},
        "mtt": {"lr_img": 1e4, "batch_syn": 51, "syn_steps": 10},
        "s2d-mtt": {"lr_dynamic": 1e5, "lr_hal": 1e-2, "batch_syn": 51, "syn_steps": 10},
        "frepo": {"lr_img": 1e-3},
        "s2d-frepo": {"lr_dynamic": 1e-1, "lr_hal": 1e-3},
    },
    ("hmdb51", 5): {
        "dm": {"lr_img": 300.0, "batch_real": 64},
        "s2d-dm": {"lr_dynamic": 10.0, "lr_hal": 1e-5, "batch_real": 64},
        "mtt": {"lr_img": 1e6, "batch_syn": 128, "syn_steps": 5},
        "s2d-mtt": {
            "lr_dynamic": 1e6,
            "lr_hal": 1e-2,
            "batch_syn": 128,
            "syn_steps": 5,
            "learn_syn_lr": False,
        },
        "frepo": {"lr_img": 1e-3},
        "s2d-frepo": {"lr_dynamic": 1e-2, "lr_hal": 1e-3},
    },
    ("kinetics400", 1): {
        "dm": {"lr_img": 100.0, "batch_real": 64},
        "s2d-dm": {"lr_dynamic": 1.0, "lr_hal": 1e-5, "batch_real": 64},
        "mtt": {"lr_img": 5e5, "batch_syn": 256, "syn_steps": 10},
        "s2d-mtt": {
            "lr_dynamic": 1e3,
            "lr_hal": 1e-2,
            "batch_syn": 256,
            "syn_steps": 10,
            "learn_syn_lr": False,
        },
        "frepo": {"lr_img": 1e-3},
    },
    ("kinetics400", 5): {
        "dm": {"lr_img": 500.0, "batch_real": 128},
        "s2d-dm": {"lr_dynamic": 10.0, "lr_hal": 1e-5, "batch_real": 128},
        "mtt": {"lr_img": 1e7, "batch_syn": 256, "syn_steps": 5},
        "s2d-mtt": {
            "lr_dynamic": 1e7,
            "lr_hal": 1e-2,
            "batch_syn": 256,
            "syn_steps": 5,
            "learn_syn_lr": False,
        },
        "frepo": {"lr_img": 1e-3},
    },
    ("ssv2", 1): {
        "dm": {"lr_img": 10.0, "batch_real": 64},
        "s2d-dm": {"lr_dynamic": 1.0, "lr_hal": 1e-5, "batch_real": 64},
        "mtt": {"lr_img": 1e5, "batch_syn": 256, "syn_steps": 10},
        "s2d-mtt": {
            "lr_dynamic": 1e4,
            "lr_hal": 1e-2,
            "batch_syn": 256,
            "syn_steps": 10,
            "learn_syn_lr": False,
        },
        "frepo": {"lr_img": 1e-3},
    },
    ("ssv2", 5): {
        "dm": {"lr_img": 100.0, "batch_real": 128},
        "s2d-dm": {"lr_dynamic": 100.0, "lr_hal": 1e-5, "batch_real": 128},
        "mtt": {"lr_img": 1e6, "batch_syn": 256, "syn_steps": 5},
        "s2d-mtt": {
            "lr_dynamic": 1e5,
            "lr_hal": 1e-2,
            "batch_syn": 256,
            "syn_steps": 5,
            "learn_syn_lr": False,
        },
        "frepo": {"lr_img": 1e-3},
    },
}
# The embedded default dataset is not in the paper: these values were measured here with
# 10-iteration runs scored by the loss on 3 held-out iterations (probe ratio after/before:
# DM 0.95 at lr_img 100 vs 0.99 at 10; S2D-DM 0.32 at lr_dynamic 1-100 with lr_hal 1e-4,
# 0.22 with lr_hal 1e-3, 0.42 at the SSv2 values). lr_hal 1e-3 diverged at iteration 183 of
# a 200-iteration run (momentum 0.95), so the default keeps 1e-4. MTT at SSv2's lr_img 1e5
# blew the pixels up (std 6.1, max |x| 83 after 20 iterations, 15% top-1 after 30 epochs on
# one network); 1e4 / 1e3 / 1e2 kept them near the real data's scale (std 0.89 / 0.62 / 0.61)
# and scored 51.7 / 53.0 / 48.3%.
_TABLE[("embedded", 1)] = {
    "dm": {"lr_img": 100.0, "batch_real": 64},
    "mtt": {"lr_img": 1e3, "batch_syn": 10, "syn_steps": 10},
    "s2d-dm": {"lr_dynamic": 10.0, "lr_hal": 1e-4, "batch_real": 64},
    "static-dm": {"lr_img": 1.0},
}
_TABLE[("embedded", 5)] = _TABLE[("embedded", 1)]
# Static learning (stage 1) of every dataset: DC's and DM's own image learning rates.
# DC matches real batches of 256 (SPEC §4).
STATIC = {"static-dc": {"lr_img": 0.1, "batch_real": 256}, "static-dm": {"lr_img": 1.0}}

# Iterations in the paper's scripts (SPEC §6), the default of every run; static learning
# takes DC's 1000 (SPEC §4), and static DM the same. The quickstart and the search spaces
# set their own, smaller budgets explicitly.
ITERATIONS = {
    "dm": 5000,
    "s2d-dm": 5000,
    "mtt": 8000,
    "s2d-mtt": 10000,
    "frepo": 10000,
    "s2d-frepo": 10000,
    "static-dc": 1000,
    "static-dm": 1000,
}
DEFAULT_ITERATIONS = 1000  # a method the paper did not run


def paper_iterations(method: str) -> int:
    """The paper's iteration budget of ``method`` (``static-<name>`` for static learning)."""
    return ITERATIONS.get(method, DEFAULT_ITERATIONS)


# Shared by every dataset: MTT's expert settings (SPEC §6) and the evaluation lr.
COMMON = {"expert_epochs": 1, "max_start_epoch": 10, "lr_teacher": 0.01, "lr_lr": 1e-5}


# --smoke-test (the jobs and the search): the fewest real clips per class, student steps,
# expert epochs and pool networks that still run every path of a method, in seconds.
SMOKE = {
    "batch_real": 8,
    "syn_steps": 2,
    "batch_syn": 10,
    "max_start_epoch": 1,
    "expert_epochs": 1,
    "pool_size": 2,
}


def smoke_settings(config_cls: type) -> dict[str, int]:
    """The SMOKE settings a method's config (a pydantic model class) has."""
    return {k: v for k, v in SMOKE.items() if k in config_cls.model_fields}


def paper_dataset(dataset: str, frames: int) -> str:
    """The paper's dataset whose values apply to ``dataset``."""
    if dataset == "ucf101":
        return "miniucf"
    if any(name == dataset for name, _ in _TABLE):
        return dataset
    return "ssv2" if frames <= 8 else "miniucf"


def paper_defaults(method: str, dataset: str, ipc: int, frames: int) -> dict[str, float]:
    """The paper's settings of ``method`` for ``dataset`` at ``ipc`` ({} where it gives none)."""
    key = (paper_dataset(dataset, frames), 1 if ipc < 5 else 5)
    return {**STATIC.get(method, {}), **_TABLE[key].get(method, {})}
