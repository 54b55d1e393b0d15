"""camp.space: fixed values and search ranges, checked against the config classes before any trial."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from camp.model import ModelConfig
from camp.preprocess import PreprocessConfig
from camp.space import is_active, parse_space, resolve, suggest_with

WHERE = "sweeps/test.yaml"
PRE_DEFAULTS = dataclasses.asdict(PreprocessConfig())
MODEL_DEFAULTS = dataclasses.asdict(ModelConfig())


def pre(raw: dict):
    return {knob.name: knob for knob in parse_space("preprocess", raw, PreprocessConfig, WHERE)}


def mod(raw: dict):
    return {knob.name: knob for knob in parse_space("model", raw, ModelConfig, WHERE)}


def test_fixed_values():
    knobs = pre({"mode": "gray", "size": 48, "crop_top": 0.1})
    assert {name: (k.kind, k.value) for name, k in knobs.items()} == {
        "mode": ("fixed", "gray"), "size": ("fixed", 48), "crop_top": ("fixed", 0.1)}
    assert all(knob.kind == "fixed" for knob in knobs.values())
    assert resolve(list(knobs.values())) == {"mode": "gray", "size": 48, "crop_top": 0.1}


def test_int_range_with_step():
    knob = pre({"threshold_block": {"int": [3, 31], "step": 2}})["threshold_block"]
    assert (knob.kind, knob.low, knob.high, knob.step, knob.log) == ("int", 3, 31, 2, False)
    assert knob.candidates() == list(range(3, 32, 2))
    assert knob.param_name == "preprocess.threshold_block"
    assert knob.kind != "fixed"


def test_float_and_log_ranges():
    knobs = mod({"learning_rate": {"float": [1.0e-4, 3.0e-3], "log": True}, "dropout": {"float": [0, 0.5]}})
    lr, dropout = knobs["learning_rate"], knobs["dropout"]
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-4, 3e-3, True)
    assert (dropout.low, dropout.high) == (0.0, 0.5) and isinstance(dropout.low, float)


def test_choice():
    knob = pre({"mode": {"choice": ["binary", "gray", "color"]}})["mode"]
    assert knob.kind == "choice" and knob.choices == ("binary", "gray", "color")
    assert knob.candidates() == ["binary", "gray", "color"]


@pytest.mark.parametrize("spec", [
    {"int": [4, 10]},  # includes even values
    {"int": [4, 10], "step": 2},  # only even values
    {"int": [3, 9], "step": 3},  # 6 is even
    {"choice": [15, 16]},
    14,
])
def test_even_threshold_block_is_rejected(spec):
    with pytest.raises(ValueError) as error:
        pre({"threshold_block": spec})
    message = str(error.value)
    assert WHERE in message and "preprocess.threshold_block" in message and "odd" in message


def test_odd_threshold_block_range_is_accepted():
    assert pre({"threshold_block": {"int": [5, 25], "step": 2}})["threshold_block"].candidates()[-1] == 25


@pytest.mark.parametrize("name, spec", [
    ("crop_top", -0.1),
    ("crop_bottom", {"float": [-0.2, 0.3]}),
    ("crop_left", {"choice": [0.0, -0.05]}),
    ("crop_right", {"float": [0.0, 1.0]}),
])
def test_negative_or_whole_margins_are_rejected(name, spec):
    with pytest.raises(ValueError, match=f"preprocess.{name}"):
        pre({name: spec})


def test_margins_that_together_cut_everything_are_rejected():
    # each range alone is valid, but both at their high ends leave no image
    with pytest.raises(ValueError, match="high ends"):
        pre({"crop_top": {"float": [0.1, 0.6]}, "crop_bottom": {"float": [0.1, 0.4]}})


@pytest.mark.parametrize("raw, pattern", [
    ({"filters": {"int": [64, 16]}}, "model.filters: empty range"),
    ({"dropout": {"float": [0.5, 0.1]}}, "model.dropout: empty range"),
    ({"filters": {"int": [8.5, 16]}}, "model.filters: int bounds must be integers"),
    ({"filters": {"int": [8, 16, 32]}}, r"model.filters: int must be \[low, high\]"),
    ({"filters": {"int": [8, 17], "step": 2}}, "model.filters: .*multiple of step"),
    ({"filters": {"int": [8, 16], "step": 0}}, "model.filters: step must be a positive"),
    ({"filters": {"int": [8, 16], "step": 1.5}}, "model.filters: step must be a positive integer"),
    ({"learning_rate": {"float": [0, 0.1], "log": True}}, "model.learning_rate: log ranges"),
    ({"learning_rate": {"float": [1e-4, 1e-2], "log": True, "step": 1}}, "model.learning_rate: log ranges"),
    ({"filters": {"int": [8, 64], "log": True, "step": 2}}, "model.filters: log ranges"),
    ({"filters": {"int": [8, 16], "choice": [8]}}, "model.filters: give exactly one of"),
    ({"filters": {"ints": [8, 16]}}, "model.filters: unknown range key.*ints"),
    ({"optimizer": {"choice": []}}, "model.optimizer: choice must be a non-empty list"),
    ({"optimizer": {"choice": ["adam", "lion"]}}, "model.optimizer='lion'"),
    ({"filters": {"float": [8, 16]}}, "model.filters=8.0.*expected int"),
    ({"filtres": 8}, "unknown model knob.*filtres"),
    ({1: 8}, "unknown model knob.*1"),
])
def test_invalid_ranges_are_named(raw, pattern):
    with pytest.raises(ValueError, match=pattern):
        mod(raw)


def test_int_log_range_without_step_is_fine():
    assert mod({"filters": {"int": [8, 64], "log": True}})["filters"].log


def test_when_condition():
    knobs = list(mod({"loss_weighting": {"choice": ["none", "balanced", "focal"]},
                      "focal_gamma": {"float": [0.5, 3.0], "when": {"loss_weighting": "focal"}}}).values())
    gamma = knobs[1]
    assert gamma.when == ({"loss_weighting": ("focal",)},)
    asked = []

    def fake(choice):
        def suggest(knob):
            asked.append(knob.name)
            return choice if knob.name == "loss_weighting" else 1.25
        return suggest

    assert resolve(knobs, fake("balanced"), MODEL_DEFAULTS) == {"loss_weighting": "balanced"}
    assert asked == ["loss_weighting"]  # focal_gamma was not sampled
    asked.clear()
    assert resolve(knobs, fake("focal"), MODEL_DEFAULTS) == {"loss_weighting": "focal", "focal_gamma": 1.25}
    assert asked == ["loss_weighting", "focal_gamma"]


def test_conditional_knob_listed_first_still_sees_the_chosen_value():
    knobs = list(mod({"focal_gamma": {"float": [0.5, 3.0], "when": {"loss_weighting": "focal"}},
                      "loss_weighting": "focal"}).values())
    assert resolve(knobs, lambda knob: 2.5) == {"loss_weighting": "focal", "focal_gamma": 2.5}


def test_when_falls_back_to_defaults_and_else():
    knobs = list(mod({"focal_gamma": {"float": [0.5, 3.0], "when": {"loss_weighting": "focal"}, "else": 0.0}}).values())
    # ModelConfig's default loss_weighting is balanced: the range is inactive, `else` applies
    assert resolve(knobs, lambda knob: 9.9, MODEL_DEFAULTS) == {"focal_gamma": 0.0}
    assert resolve(knobs, lambda knob: 1.5, {**MODEL_DEFAULTS, "loss_weighting": "focal"}) == {"focal_gamma": 1.5}


def test_when_list_means_any_of():
    knob = pre({"threshold_c": {"float": [0, 8], "when": [{"mode": "binary"}, {"crop_method": ["recipe", "none"]}]}})["threshold_c"]
    assert is_active(knob, {"mode": "binary", "crop_method": "grabcut"})
    assert is_active(knob, {"mode": "gray", "crop_method": "none"})
    assert not is_active(knob, {"mode": "gray", "crop_method": "grabcut"})


@pytest.mark.parametrize("when", [{"los_weighting": "focal"}, [{"loss_weighting": "focal"}, {"gama": 1}]])
def test_when_naming_an_unknown_knob_is_rejected(when):
    with pytest.raises(ValueError, match=r"model.focal_gamma.when names unknown knob '(los_weighting|gama)'"):
        mod({"focal_gamma": {"float": [0.5, 3.0], "when": when}})


@pytest.mark.parametrize("when", ["focal", [], [3]])
def test_malformed_when_is_rejected(when):
    with pytest.raises(ValueError, match="model.focal_gamma: when must be a mapping"):
        mod({"focal_gamma": {"float": [0.5, 3.0], "when": when}})


def test_invalid_else_value_is_rejected():
    with pytest.raises(ValueError, match="model.focal_gamma=20"):
        mod({"focal_gamma": {"float": [0.5, 3.0], "when": {"loss_weighting": "focal"}, "else": 20}})


def test_resolve_without_suggest_names_the_range():
    knobs = list(mod({"filters": 16, "learning_rate": {"float": [1e-4, 1e-2], "log": True}}).values())
    with pytest.raises(ValueError, match=r"model\.learning_rate is a search range"):
        resolve(knobs)
    # an inactive range needs no suggest
    inactive = list(mod({"focal_gamma": {"float": [0.5, 3.0], "when": {"loss_weighting": "focal"}}}).values())
    assert resolve(inactive, None, MODEL_DEFAULTS) == {}


SPACE = {"optimizer": {"choice": ["adam", "sgd"]}, "learning_rate": {"float": [1e-4, 1e-2], "log": True},
         "filters": {"int": [8, 32], "step": 8}, "loss_weighting": {"choice": ["balanced", "focal"]},
         "focal_gamma": {"float": [0.5, 3.0], "when": {"loss_weighting": "focal"}}, "batch_size": 32}


def sample(seed: int, n: int = 8) -> list[dict]:
    knobs = parse_space("model", SPACE, ModelConfig, WHERE)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3))
    out = []
    for _ in range(n):
        trial = study.ask()
        values = resolve(knobs, suggest_with(trial), MODEL_DEFAULTS)
        ModelConfig(**values)  # every sampled combination builds
        study.tell(trial, values["learning_rate"] * 100 + values["filters"] / 32)
        out.append({"values": values, "params": dict(trial.params)})
    return out


def test_same_seed_same_samples_and_params_are_named_by_section():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    first, second = sample(1), sample(1)
    assert first == second
    assert sample(2) != first
    for record in first:
        values, params = record["values"], record["params"]
        assert values["batch_size"] == 32 and "model.batch_size" not in params  # fixed: not an Optuna param
        assert params["model.learning_rate"] == values["learning_rate"]
        assert 1e-4 <= values["learning_rate"] <= 1e-2
        assert values["filters"] in (8, 16, 24, 32)
        # the conditional knob is an Optuna param exactly when its condition holds
        assert ("model.focal_gamma" in params) == (values["loss_weighting"] == "focal")
        assert ("focal_gamma" in values) == (values["loss_weighting"] == "focal")
