"""camp.config: study files parse into frozen dataclasses; every mistake is a ValueError naming the key."""

from __future__ import annotations

import dataclasses

import pytest

from camp import config, names


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


def test_build_dataclass_and_coerce():
    built = config.build_dataclass(config.SamplerConfig, {"seed": 3}, "here")
    assert built == config.SamplerConfig(seed=3)
    assert config.build_dataclass(config.SamplerConfig, None, "here") == config.SamplerConfig()
    assert config.coerce(3, float, "x") == 3.0 and isinstance(config.coerce(3, float, "x"), float)
    assert config.coerce(None, config.Optional[int], "x") is None
    with pytest.raises(ValueError, match="here.seed: expected int"):
        config.build_dataclass(config.SamplerConfig, {"seed": "3"}, "here")
    with pytest.raises(ValueError, match=r"^here: sampler.name"):
        config.build_dataclass(config.SamplerConfig, {"name": "x"}, "here")


def test_flatten_and_to_dict():
    assert config.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
    flat = config.flatten(config.to_dict(config.StudyConfig()))
    assert flat["sampler.seed"] == 42 and flat["pruner.name"] == "median" and flat["n_trials"] == 20
