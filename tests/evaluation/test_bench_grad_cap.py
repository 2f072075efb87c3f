"""bench/eval_grad_cap.py: the evaluation's gradient cap measured on healthy sets."""

from __future__ import annotations

import pytest
from benches import bench_module


@pytest.mark.slow
def test_smoke_run_prints_each_cap_beside_the_unbounded_reference(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("S2D_PROGRESS", "0")  # the bench's own setting, gone after the test
    with bench_module("eval_grad_cap") as bench:
        assert bench.main(["--smoke-test", "--cap", "1e-3"]) == 0
        assert bench.step.clip_grad_norm_ is bench.NormLog()._clip  # restored after each run
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| random")]
    unbounded, capped = rows
    assert "unbounded (reference)" in unbounded and "0.0 % of" in unbounded
    assert "| 0.001 |" in capped and "100.0 % of" in capped  # a tiny cap acts on every step
