"""What a search prints as it runs: one line per trial report and per trial end, each
trial's val top-1 beside random real clips of its set's size scored the same way (the line
it must beat), in place of Tune's status tables."""

from __future__ import annotations

import math
import time

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

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        note(
            f"search: {self._name(trial)} FAILED (its error: {trial.local_path}/error.txt); "
            f"{self.ended}/{self.trials} trials done"
        )


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
