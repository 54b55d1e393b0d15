"""camp.config: study files parse into frozen dataclasses; every mistake is a ValueError naming the key.
Through `camp sweep`, a mistaken study file (or a space that can sample an invalid combination) exits 2
naming the key and the allowed values before the study exists."""

from __future__ import annotations

import dataclasses
import os

import pytest

from camp import config, names
from camp.cli import main


def study(tmp_path, text: str, name: str = "study.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path, text: str):
    return config.load_study_file(study(tmp_path, text))


def test_empty_file_builds_the_defaults(tmp_path):
    parsed = load(tmp_path, "")
    assert parsed.study.name == "study"  # the file's stem
    assert parsed.study.metric == names.VAL_MACRO_F1
    assert parsed.study.direction == "maximize"
    assert parsed.study.n_trials == 20
    assert parsed.study.sampler == config.SamplerConfig()
    assert parsed.study.pruner == config.PrunerConfig()
    assert parsed.data == config.DataConfig()
    assert parsed.seed == 42
    assert parsed.preprocess == {} and parsed.model == {}


def test_full_file_round_trips(tmp_path):
    parsed = load(tmp_path, """
study:
  name: mine
  metric: val/loss
  n_trials: 3
  timeout: 60
  sampler: {name: random, seed: 7}
  pruner: {name: none}
data: {path: somewhere, label_map: identity, validation_fraction: 0.2, max_per_class: 5}
seed: 3
preprocess: {mode: gray}
model: {filters: {int: [8, 16]}}
""")
    assert parsed.study.name == "mine"
    assert parsed.study.direction == "minimize"  # val/loss's natural direction
    assert parsed.study.timeout == 60.0 and isinstance(parsed.study.timeout, float)
    assert parsed.study.sampler == config.SamplerConfig(name="random", seed=7)
    assert parsed.study.pruner.name == "none"
    assert parsed.data == config.DataConfig(path="somewhere", label_map="identity", validation_fraction=0.2,
                                            max_per_class=5)
    assert parsed.seed == 3
    assert parsed.preprocess == {"mode": "gray"}
    assert parsed.model == {"filters": {"int": [8, 16]}}


def test_configs_are_frozen(tmp_path):
    parsed = load(tmp_path, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.study.n_trials = 5


@pytest.mark.parametrize("text, names", [
    ("study: {n_trail: 3}", ["study", "n_trail"]),
    ("study: {sampler: {nme: tpe}}", ["study.sampler", "nme"]),
    ("study: {pruner: {warmup: 2}}", ["study.pruner", "warmup"]),
    ("data: {pth: x}", ["data", "pth"]),
    ("stduy: {n_trials: 3}", ["stduy"]),
])
def test_unknown_keys_are_named(tmp_path, text, names):
    with pytest.raises(ValueError) as error:
        load(tmp_path, text)
    message = str(error.value)
    assert "study.yaml" in message
    for name in names:
        assert name in message


@pytest.mark.parametrize("text, names", [
    ("study: {n_trials: many}", ["study.n_trials", "expected int"]),
    ("study: {n_trials: true}", ["study.n_trials", "expected int"]),  # a bool is not an int
    ("study: {n_trials: 2.5}", ["study.n_trials", "expected int"]),
    ("study: {name: 5}", ["study.name", "expected str"]),
    ("study: {sampler: {multivariate: 1}}", ["study.sampler.multivariate", "expected bool"]),
    ("study: {sampler: tpe}", ["study.sampler", "expected a mapping"]),
    ("data: {validation_fraction: '0.1'}", ["data.validation_fraction", "expected float"]),
    ("data: {max_per_class: 1.5}", ["data.max_per_class", "expected int"]),
    ("data: [1, 2]", ["data", "expected a mapping"]),
    ("seed: 1.5", ["seed"]),
    ("seed: yes", ["seed"]),
    ("preprocess: [a, b]", ["preprocess must be a mapping"]),
    ("model: 3", ["model must be a mapping"]),
    ("- just\n- a list\n", ["expected a mapping"]),
])
def test_wrong_types_are_named(tmp_path, text, names):
    with pytest.raises(ValueError) as error:
        load(tmp_path, text)
    for name in names:
        assert name in str(error.value)


@pytest.mark.parametrize("text, names", [
    ("study: {metric: val/f1}", ["study.metric", "val/f1"]),
    ("study: {direction: up}", ["study.direction"]),
    ("study: {n_trials: 0}", ["study.n_trials"]),
    ("study: {timeout: -1}", ["study.timeout"]),
    ("study: {dominated_time_share: 1.5}", ["study.dominated_time_share", "1.5"]),
    ("study: {sampler: {name: grid}}", ["sampler.name", "grid"]),
    ("study: {sampler: {n_startup_trials: -1}}", ["sampler.n_startup_trials"]),
    ("study: {pruner: {name: asha}}", ["pruner.name", "asha"]),
    ("data: {validation_fraction: 1.0}", ["data.validation_fraction"]),
    ("data: {validation_fraction: 0}", ["data.validation_fraction"]),
    ("data: {max_per_class: 0}", ["data.max_per_class"]),
])
def test_invalid_values_are_named(tmp_path, text, names):
    with pytest.raises(ValueError) as error:
        load(tmp_path, text)
    for name in names:
        assert name in str(error.value)


def test_non_string_keys_are_a_value_error(tmp_path):
    # YAML turns `1:` / `yes:` keys into int / bool; the error must still be a ValueError naming them
    with pytest.raises(ValueError, match="unknown section.*1"):
        load(tmp_path, "1: 2\n")
    with pytest.raises(ValueError, match="True.*nme|nme.*True"):
        load(tmp_path, "study: {yes: 2, nme: x}\n")


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = study(tmp_path, "study:\n  name: x\n  n_trials: [3\nseed: 1\n")
    with pytest.raises(ValueError) as error:
        config.load_study_file(path)
    message = str(error.value)
    assert str(path) in message
    assert "YAML syntax error" in message
    assert "line 4" in message and "column" in message


def test_tab_indentation_names_its_line(tmp_path):
    with pytest.raises(ValueError, match="line 3"):
        load(tmp_path, "study:\n  name: x\n\tn_trials: 3\n")


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such study file"):
        config.load_study_file(tmp_path / "absent.yaml")


# -- study files through `camp sweep`: refused before anything runs -------------------------------------

@pytest.mark.parametrize("knobs, where, allowed", [
    ("preprocess: {mode: rgb}", "preprocess.mode='rgb'", "('binary', 'gray', 'color')"),
    ("preprocess: {crop_method: {choice: [recipe, magic]}}", "preprocess.crop_method='magic'", "('recipe', 'none'"),
    ("preprocess: {threshold_block: {int: [3, 9]}}", "preprocess.threshold_block=4", "odd and >= 3"),
    ("preprocess: {median_blur: 4}", "preprocess.median_blur=4", "0 (off) or odd"),
    ("model: {kernel_size: {choice: [3, 4]}}", "model.kernel_size=4", "3, 5 or 7"),
    ("preprocess: {crop_top: 0.5, crop_bottom: 0.5}", "preprocess", "must leave some image"),
    ("preprocess: {size: {int: [4, 64]}}", "preprocess.size=4", "[8, 256]"),
    ("model: {optimizer: lion}", "model.optimizer='lion'", "('adam', 'adamw', 'sgd', 'rmsprop')"),
    ("preprocess: {sizes: 24}", "unknown preprocess knob(s) sizes", "known: crop_top"),
    ("model: {dropout: {float: [0.5, 0.1]}}", "model.dropout", "empty range"),
    ("model: {filters: sixteen}", "model.filters='sixteen'", "expected int"),
])
def test_study_file_mistakes_name_the_key_and_the_allowed_values(isolated, synthetic_data, capsys, knobs, where,
                                                                 allowed):
    study = isolated / "study.yaml"
    study.write_text(f"study: {{name: s}}\n{knobs}\n")
    journal = isolated / "optuna.journal"
    assert main(["sweep", str(study), "--data", str(synthetic_data), "--storage", str(journal)]) == 2
    err = capsys.readouterr().err
    assert str(study) in err and where in err and allowed in err, err
    assert not journal.exists()  # refused before the study (let alone a trial) exists


@pytest.mark.parametrize("space", [
    # each value is fine with the others' first choice; the largest two together cut the whole image
    "crop_top: {choice: [0.3, 0.6, 0.1]}\n  crop_bottom: {choice: [0.3, 0.1, 0.6]}",
    # the `else` value of one range with the other range's high end
    "crop_top: {float: [0.1, 0.4]}\n  crop_bottom: {float: [0.1, 0.3], when: {mode: gray}, else: 0.6}",
])
def test_a_space_that_can_sample_an_invalid_combination_is_rejected(isolated, synthetic_data, capsys, space):
    study = isolated / "combo.yaml"
    study.write_text(f"study: {{name: combo}}\npreprocess:\n  {space}\n")
    journal = isolated / "optuna.journal"
    assert main(["sweep", str(study), "--data", str(synthetic_data), "--storage", str(journal)]) == 2
    err = capsys.readouterr().err
    assert "all knobs at their high ends" in err and "crop_top + crop_bottom must leave some image" in err
    assert not journal.exists()


def test_yaml_syntax_error_in_a_study_file_shows_the_line_through_the_cli(isolated, capsys):
    study = isolated / "broken.yaml"
    study.write_text("study:\n  name: broken\nmodel: {filters: 8\n")
    assert main(["sweep", str(study)]) == 2
    assert "YAML syntax error at line" in capsys.readouterr().err


@pytest.mark.parametrize("text, where, message", [
    ("study: {name: d}\nseed: 1\nseed: 2\n", "line 3", "duplicate key 'seed' (first given on line 2)"),
    ("study: {name: d}\nmodel: {filters: 8, dropout: 0.1, filters: 16}\n", "line 2", "duplicate key 'filters'"),
    ("study: {name: d}\npreprocess: {mode: binary, threshold_block: {int: [3, 405]}}\n",
     "preprocess.threshold_block=4", "odd and >= 3"),  # 202 values: every one is checked, not only the ends
    ("study: {name: d}\nmodel: {learning_rate: {float: [0.001, 0.01], log: 'no'}}\n",
     "model.learning_rate", "log must be true or false, got str 'no'"),
    ("study: {name: d}\nmodel: {loss_weighting: {choice: [none, focal]}, "
     "focal_gamma: {float: [1, 2], when: {loss_weighting: focall}}}\n",
     "model.focal_gamma.when", "loss_weighting can never be 'focall'"),
    ("study: {name: d, max_failures: 0}\n", "study.max_failures", ">= 1"),
    ("study: {name: ''}\n", "study.name", "must not be empty"),
    ("study: {name: d}\nmodel: {min_epochs: 10, max_epochs: 5}\n", "model.min_epochs", "<= model.max_epochs"),
    ("study: {name: d, sampler: {seed: 4294967296}}\n", "sampler.seed", "[0, 2**32)"),
    ("study: {name: d, pruner: {n_warmup_steps: -1}}\n", "pruner.n_warmup_steps", ">= 0"),
    ("study: {name: d, finalize: {tta: mirror}}\n", "finalize.tta", "one of ('none', 'flip', 'auto')"),
    ("study: {name: d, finalize: {heldout_splits: -1}}\n", "finalize.heldout_splits", "[0, 1000]"),
    ("study: {name: d, finalize: {cascade: 99}}\n", "finalize.cascade", "label agreement in [0.9, 1]"),
    ("study: {name: d, finalize: {cascade: 0.99, distill: 5}}\n", "finalize.cascade", "with distill 5"),
])
def test_silently_accepted_mistakes_are_refused_by_name_before_any_study_or_run(isolated, synthetic_data, capsys,
                                                                                 text, where, message):
    import mlflow

    study = isolated / "mistake.yaml"
    study.write_text(text)
    journal = isolated / "optuna.journal"
    assert main(["sweep", str(study), "--data", str(synthetic_data), "--storage", str(journal)]) == 2
    err = capsys.readouterr().err
    assert str(study) in err and where in err and message in err, err
    assert not journal.exists()  # no study ...
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])  # this test's store (an earlier test may have set another)
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []  # ... and no sweep-* run
