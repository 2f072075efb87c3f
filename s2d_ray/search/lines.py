"""What a search prints as it runs: one line per trial report and per trial end, each
trial's val top-1 beside random real clips of its set's size scored the same way (the line
it must beat), in place of Tune's status tables."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

from ray.tune import Callback

from s2d_ray.progress import duration, note


class TrialLines(Callback):
    def __init__(self, trials: int, iterations: int, reference: float | None = None) -> None:
        self.trials, self.iterations = trials, iterations
        self.reference = reference  # set once computed, before the trials start
        self.order: dict[str, int] = {}
        self.ended = 0
        self.started = time.monotonic()

    def setup(self, **info) -> None:  # a restored search counts from its restart
        self.started = time.monotonic()

    def _name(self, trial) -> str:
        number = self.order.setdefault(trial.trial_id, len(self.order) + 1)
        return f"trial {number}/{self.trials} ({trial.trial_id})"

    def _elapsed(self) -> str:
        return f"{duration(time.monotonic() - self.started)} in"

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        point = ", ".join(f"{k} {_short(v)}" for k, v in (trial.config or {}).items())
        note(f"search: {self._name(trial)} starts: {point}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        val = result.get("val_top1", math.nan)
        beside = (
            ""
            if self.reference is None
            else f" (random real clips of its size: {100 * self.reference:.1f}%)"
        )
        note(
            f"search: {self._name(trial)} at iteration {result.get('iteration')}/"
            f"{self.iterations}: val top-1 {100 * val:.1f}%{beside}, loss "
            f"{result.get('loss', math.nan):.4g}; {self._elapsed()}"
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        note(
            f"search: {self._name(trial)} ended; {self.ended}/{self.trials} trials done, "
            f"{self._elapsed()}"
        )

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        why = _cause(trial) or "it failed"
        note(f"search: {self._name(trial)} {why}; it starts again from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        why = _cause(trial) or "FAILED"
        note(
            f"search: {self._name(trial)} {why} (its error: {trial.local_path}/error.txt); "
            f"{self.ended}/{self.trials} trials done"
        )


# Ray's memory monitor says what the node had and what the killed process held
_NODE_MEMORY = re.compile(r"was ([\d.]+)GB used / ([\d.]+)GB limit")
_HELD = re.compile(r"actual memory used=([\d.]+)GB")


def _cause(trial) -> str | None:
    """Why a trial failed, when it is something to act on: its node lost, or killed by
    Ray's memory monitor (with the memory its process held and its node's)."""
    try:  # Tune appends each failure to the trial's error file on the driver
        text = Path(trial.error_file).read_text(errors="replace") if trial.error_file else ""
    except OSError:
        return None
    text = text.rsplit("Failure # ", 1)[-1]
    if "OutOfMemoryError" in text or "running low on memory" in text:
        held, node = _HELD.search(text), _NODE_MEMORY.search(text)
        what = f": its process held {held.group(1)} GB" if held else ""
        if node:
            what += f" when its node had {node.group(1)} of {node.group(2)} GB in use"
        return (
            f"was killed by Ray's memory monitor{what} (give trials more memory per node: "
            "fewer at once, budget.max_concurrent, or bigger nodes)"
        )
    if "NodeDiedError" in text or "node has died" in text or "its node was terminated" in text:
        return "lost its node"
    return None


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
