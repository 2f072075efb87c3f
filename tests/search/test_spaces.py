"""Search spaces: every shipped YAML loads and agrees with the paper's table; bad files fail
naming the file and the key; ``--set`` overrides any key."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2d_ray.methods.hyperparameters import paper_defaults
from s2d_ray.search import SpaceError, load_space

SPACES = sorted((Path(__file__).parents[2] / "tune_spaces").rglob("*.yaml"))  # + quickstart/
FRAMES = {"kinetics400": 16, "ssv2": 16, "embedded": 8}


def test_the_required_spaces_are_shipped():
    names = {p.stem for p in SPACES if p.parent.name == "tune_spaces"}
    for dataset in ("embedded", "miniucf", "ucf101", "hmdb51", "kinetics400", "ssv2"):
        for ipc in (1, 5):
            for method in ("s2d-mtt", "s2d-dm", "mtt"):
                assert f"{dataset}_ipc{ipc}_{method}" in names


@pytest.mark.parametrize("path", SPACES, ids=[f"{p.parent.name}/{p.stem}" for p in SPACES])
def test_every_shipped_space_loads_and_starts_at_the_papers_values(path):
    space = load_space(path)
    assert space.name == path.stem  # the file name says what the file holds
    assert space.paper, "the paper's values are the first point"
    paper = paper_defaults(space.method, space.dataset, space.ipc, FRAMES.get(space.dataset, 16))
    settings, spc = space.trial_settings(space.paper[0])
    for key, value in paper.items():  # one source of truth: methods/hyperparameters.py
        if key in settings:
            assert settings[key] == pytest.approx(value), key
    if spc is not None:
        assert spc >= space.ipc and settings["dpc"] >= 1


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


GOOD = """
dataset: embedded
ipc: 1
method: s2d-mtt
space:
  lr_dynamic: {type: loguniform, low: 1.0, high: 1.0e+6}
  syn_steps: {type: choice, values: [5, 10]}
paper:
  - {lr_dynamic: 1.0e+4, syn_steps: 10}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("lr_dynamic:", "lr_dynamc:", 1), "space: ['lr_dynamc'] are not settings"),
        (GOOD + "budget: {trails: 3}\n", "budget.trails: Extra inputs are not permitted"),
        (GOOD.replace("low: 1.0,", "low: 1.0e+7,"), "must be below high"),
        (GOOD.replace("type: choice", "type: normal"), "space.syn_steps"),
        (GOOD.replace("syn_steps: 10}", "syn_steps: 20}"), "paper[0].syn_steps = 20 lies outside"),
        (GOOD + "fixed: {batch_syn: -1}\n", "s2d-mtt refuses batch_syn = -1"),
        (GOOD + "fixed: {syn_steps: 3}\n", "both searched (space) and fixed"),
        (GOOD + "budget: {iterations: 10, eval_every: 50}\n", "the scheduler would never see"),
        (GOOD.replace("s2d-mtt", "mttt"), "method 'mttt' is not one of"),
        (GOOD.replace("embedded", "embeded"), "dataset 'embeded' is not one of"),
        (GOOD.replace("ipc: 1", "ipc: one"), "ipc: Input should be a valid integer"),
        ("- a\n- list\n", "expected a mapping"),
        ("dataset: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_spaces_fail_naming_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_set_overrides_any_key_and_numbers_read_as_meant(tmp_path):
    space = load_space(
        write(tmp_path, GOOD.replace("1.0e+6", "1e6")),  # YAML 1.1 would read "1e6" as a string
        ["budget.trials=3", "space.syn_steps.values=[5, 10, 20]", "scheduler.type=fifo"],
    )
    assert space.budget.trials == 3 and space.scheduler.type == "fifo"
    assert space.space["syn_steps"].values == [5, 10, 20]
    assert space.space["lr_dynamic"].high == 1e6
    with pytest.raises(SpaceError, match="expected section.key=value"):
        load_space(write(tmp_path, GOOD), ["budget.trials"])
    with pytest.raises(SpaceError, match="no such search-space file"):
        load_space(tmp_path / "missing.yaml")


def test_spc_dpc_is_per_synthetic_video_and_only_for_s2d_methods(tmp_path):
    space = load_space(
        write(tmp_path, GOOD.replace("ipc: 1", "ipc: 5") + "fixed: {'spc:dpc': '2:1'}\n")
    )
    settings, spc = space.trial_settings({"lr_dynamic": 10.0, "syn_steps": 5})
    assert (spc, settings["dpc"]) == (10, 5)
    bad = GOOD.replace("method: s2d-mtt", "method: mtt").replace("lr_dynamic", "lr_img")
    with pytest.raises(SpaceError, match="spc:dpc applies to S2D methods"):
        load_space(write(tmp_path, bad + "fixed: {'spc:dpc': '1:1'}\n"))


def test_spc_dpc_set_on_the_command_line_is_not_read_as_a_base_60_number(tmp_path):
    space = load_space(write(tmp_path, GOOD), ["fixed.spc:dpc=2:2"])  # YAML 1.1: 2:2 is 122
    settings, spc = space.trial_settings({"lr_dynamic": 10.0, "syn_steps": 5})
    assert (spc, settings["dpc"]) == (2, 2)
    with pytest.raises(SpaceError, match="spc:dpc must look like '2:1', got 3"):
        load_space(write(tmp_path, GOOD), ["fixed.spc:dpc=3"])
