"""camp.warm_start: warm-start entries checked against the space, enqueued once, taken from earlier studies."""

from __future__ import annotations

import textwrap

import optuna
import pytest

from camp.config import load_study_file
from camp.objective import plan_for
from camp.warm_start import enqueue, warm_start_trials

SPACE = """
data: {label_map: camp5}
preprocess: {mode: gray, size: {choice: [24, 32]}}
model:
  family: {choice: [cnn, hog_linear]}
  learning_rate: {float: [1.0e-3, 1.0e-2], log: true, when: {family: cnn}}
  hog_cell: {choice: [4, 8], when: {family: hog_linear}}
  max_epochs: 2
"""


def _plan(tmp_path, warm_start: str, name: str = "warm"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"study:\n  name: {name}\n  warm_start: {warm_start}\n") + SPACE)
    return plan_for(load_study_file(path), 5, None, None, None)


def test_values_become_params_of_the_searched_knobs_only(tmp_path):
    plan = _plan(tmp_path, "[{preprocess: {size: 32, mode: gray}, model: {family: cnn, learning_rate: 0.002}}, "
                           "{model: {family: hog_linear}}]")
    trials = warm_start_trials(plan, optuna.storages.InMemoryStorage())
    assert trials == [({"preprocess.size": 32, "model.family": "cnn", "model.learning_rate": 0.002}, "warm_start[0]"),
                      ({"model.family": "hog_linear"}, "warm_start[1]")]


@pytest.mark.parametrize("entry, message", [
    ("{model: {dropout: 0.2}}", "model.dropout is not a knob of this study"),
    ("{model: {learning_rate: 0.5}}", r"outside the study's range \[0.001, 0.01\]"),
    ("{preprocess: {size: 64}}", r"not one of the study's choices \[24, 32\]"),
    ("{preprocess: {mode: color}}", "the study fixes it at 'gray'"),
    ("{model: {max_epochs: 3}}", "the study fixes it at 2"),
])
def test_bad_values_are_errors_naming_the_entry_and_knob(tmp_path, entry, message):
    plan = _plan(tmp_path, f"[{entry}]")
    with pytest.raises(ValueError, match=message) as error:
        warm_start_trials(plan, optuna.storages.InMemoryStorage())
    assert "study.warm_start[0]" in str(error.value)


@pytest.mark.parametrize("value, message", [
    ("{preprocess: {size: 24}}", "warm_start must be a list"),
    ("[{study: 3}]", "expected a study name"),
    ("[{study: old, top: 0}]", "top: expected an integer >= 1"),
    ("[{model: {}, extra: 1}]", "unknown key"),
    ("[{model: 5}]", "expected a mapping of knob values"),
])
def test_malformed_entries_are_refused_when_the_file_is_read(tmp_path, value, message):
    with pytest.raises(ValueError, match=message):
        _plan(tmp_path, value)


def test_enqueued_once_and_run_first(tmp_path):
    plan = _plan(tmp_path, "[{preprocess: {size: 32}, model: {family: hog_linear, hog_cell: 4}}]")
    study = optuna.create_study(direction="maximize")
    trials = warm_start_trials(plan, study._storage)
    assert enqueue(study, trials) == 1
    assert enqueue(study, trials) == 0  # a resumed study does not queue it again
    trial = study.ask()
    assert trial.suggest_categorical("model.family", ["cnn", "hog_linear"]) == "hog_linear"
    assert trial.suggest_categorical("model.hog_cell", [4, 8]) == 4
    assert study.trials[0].user_attrs["warm_start"] == "warm_start[0]"


def test_the_best_trials_of_an_earlier_study(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    old = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    for size, family, value in ((24, "cnn", 0.5), (32, "hog_linear", 0.9), (32, "cnn", 0.7)):
        old.add_trial(optuna.trial.create_trial(
            params={"preprocess.size": size, "model.family": family, "preprocess.crop_method": "none"},
            distributions={"preprocess.size": optuna.distributions.CategoricalDistribution([24, 32]),
                           "model.family": optuna.distributions.CategoricalDistribution(["cnn", "hog_linear"]),
                           "preprocess.crop_method": optuna.distributions.CategoricalDistribution(["none"])},
            value=value))
    plan = _plan(tmp_path, "[{study: old, top: 2}]")
    trials = warm_start_trials(plan, storage)
    # best first; crop_method is not searched here, so it is left to this study
    assert trials == [({"preprocess.size": 32, "model.family": "hog_linear"}, "old#1"),
                      ({"preprocess.size": 32, "model.family": "cnn"}, "old#2")]
    with pytest.raises(ValueError, match="no study named 'missing'"):
        warm_start_trials(_plan(tmp_path, "[{study: missing}]", name="other"), storage)


def test_the_default_study_starts_with_two_replicas_of_the_known_recipe_and_the_hog_floor():
    from pathlib import Path

    study_file = load_study_file(Path(__file__).resolve().parents[1] / "sweeps" / "default.yaml")
    trials = warm_start_trials(plan_for(study_file, 5, None, None, None), None)
    families = [params["model.family"] for params, _ in trials]
    assert families == ["cnn", "hog_linear", "cnn"]  # one replica per worker, the floor in between
    first, second = trials[0][0], trials[2][0]
    assert {first.pop("model.replica"), second.pop("model.replica")} == {0, 1} and first == second
