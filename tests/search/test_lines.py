"""The search's lines name why a trial failed when it is something to act on."""

from __future__ import annotations

from types import SimpleNamespace

from s2d_ray.search.lines import TrialLines

OOM = (
    "Failure # 1 (occurred at 2026-12-07_02-40-00)\n"
    "ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.\n"
    "Memory on the node (IP: 10.0.0.5, ID: abc) was 14.61GB used / 15.35GB limit (0.951800), "
    "which exceeds the memory usage threshold of 0.95. Ray killed this worker (ID: def) "
    "because it was the most recently scheduled task (job ID=01000000, lease ID=0, task "
    "name=ImplicitFunc.train, required resources={CPU: 1}, pid=4242, actual memory "
    "used=9.87GB, worker ID=def)\n"
)


def trial(tmp_path, text: str) -> SimpleNamespace:
    error = tmp_path / "error.txt"
    error.write_text(text)
    return SimpleNamespace(trial_id="abc_00000", error_file=str(error), local_path=str(tmp_path))


def test_an_oom_killed_trial_is_named_with_the_memory_it_held(tmp_path, capsys):
    lines = TrialLines(trials=4, iterations=100)
    lines.on_trial_recover(0, [], trial(tmp_path, "Failure # 1 ...\nValueError\n" + OOM))
    out = capsys.readouterr().err
    assert (
        "search: trial 1/4 (abc_00000) was killed by Ray's memory monitor: its process held "
        "9.87 GB when its node had 14.61 of 15.35 GB in use" in out
    )
    assert "it starts again from its last checkpoint" in out


def test_a_lost_node_and_an_unknown_error_are_said_as_such(tmp_path, capsys):
    lines = TrialLines(trials=2, iterations=10)
    died = "Failure # 1\nThe actor died because its node has died. Node Id: 12\n"
    lines.on_trial_recover(0, [], trial(tmp_path, died))
    lines.on_trial_error(0, [], trial(tmp_path, "Failure # 2\nValueError: bad\n"))
    out = capsys.readouterr().err
    assert "(abc_00000) lost its node; it starts again from its last checkpoint" in out
    assert "(abc_00000) FAILED (its error: " in out and "1/2 trials done" in out
