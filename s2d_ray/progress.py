"""Progress of long work: a bar on a terminal, a plain line every few seconds in a log.

    with Progress(1000, "s2d-dm ipc 1", unit="it") as bar:
        for i in range(1000):
            bar.update(loss=step())

A log gets lines such as ``s2d-dm ipc 1: 120/1000 it (12%), loss 0.412, 1.9 s/it, ETA 27m52s``:
the first as soon as one step is done (what the whole will cost), then one every
``S2D_PROGRESS_SECONDS`` (10) and the last. ``S2D_PROGRESS=0`` turns it off (search trials do:
Tune reports them). Lines go to stderr, results to stdout.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, TextIO

DEFAULT_SECONDS = 10.0
_scope: ContextVar[str] = ContextVar("s2d_progress_scope", default="")


@contextlib.contextmanager
def scope(name: str) -> Iterator[None]:
    """Label the progress of the work inside (``judging dm ipc 1: evaluation 40/1500 epoch``)."""
    token = _scope.set(name)
    try:
        yield
    finally:
        _scope.reset(token)


def _enabled() -> bool:
    return os.environ.get("S2D_PROGRESS", "1") not in ("0", "false", "no", "off")


def duration(seconds: float) -> str:
    """12s, 4m05s, 2h10m: a length of time a person reads at a glance."""
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _rate(seconds_per_unit: float, unit: str) -> str:
    if seconds_per_unit >= 1 or seconds_per_unit == 0:
        return (
            f"{seconds_per_unit:.2g} s/{unit}"
            if seconds_per_unit < 10
            else (f"{seconds_per_unit:.0f} s/{unit}")
        )
    return f"{1 / seconds_per_unit:.3g} {unit}/s"


def _field(name: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{name} {value:.4g}"
    return f"{name} {value}"


class Progress:
    """``update()`` once per unit of work done; fields (``loss=...``) shown with the count."""

    def __init__(
        self,
        total: int,
        what: str,
        *,
        unit: str = "it",
        start: int = 0,
        every: float | None = None,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        outer = _scope.get()
        self.total, self.unit = total, unit
        self.what = f"{outer}: {what}" if outer else what
        self.done = self.start = start
        self.stream = stream if stream is not None else sys.stderr
        self.every = every if every is not None else _seconds()
        self.on = enabled and _enabled() and total > start
        self.fields: dict[str, Any] = {}
        self.began = time.perf_counter()
        self.last_line = -math.inf
        self.bar = None
        if self.on and _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=start,
                desc=what,
                unit=unit,
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, **fields: Any) -> None:
        if not self.on:
            return
        self.done += n
        self.fields.update({k: v for k, v in fields.items() if v is not None})
        if self.bar is not None:
            self.bar.update(n)
            if self.fields:
                self.bar.set_postfix_str(", ".join(_field(k, v) for k, v in self.fields.items()))
            return
        now = time.perf_counter()
        first = self.done - self.start == n
        if first or self.done >= self.total or now - self.last_line >= self.every:
            self.last_line = now
            print(self.line(now), file=self.stream, flush=True)

    def show(self, **fields: Any) -> None:
        """Print the state now with ``fields`` (an evaluation's result: worth a line of its own)."""
        if not self.on:
            return
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(_field(k, v) for k, v in self.fields.items()))
            self.bar.refresh()
            return
        self.last_line = time.perf_counter()
        print(self.line(self.last_line), file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        count = self.done - self.start
        per_unit = (now - self.began) / count if count else math.nan
        left = per_unit * (self.total - self.done)
        parts = [
            f"{self.what}: {self.done}/{self.total} {self.unit} "
            f"({100 * self.done / self.total:.0f}%)"
        ]
        parts += [_field(k, v) for k, v in self.fields.items()]
        if count:
            parts.append(_rate(per_unit, self.unit))
            parts.append(
                f"ETA {duration(left)}"
                if self.done < self.total
                else f"took {duration(now - self.began)}"
            )
        return ", ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def note(text: str) -> None:
    """One line of what a job is about to do (and what it will cost), beside the progress."""
    if _enabled():
        print(text, file=sys.stderr, flush=True)


def _seconds() -> float:
    try:
        return float(os.environ.get("S2D_PROGRESS_SECONDS", DEFAULT_SECONDS))
    except ValueError:
        return DEFAULT_SECONDS


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
