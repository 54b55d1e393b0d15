"""camp.typed_yaml: mappings to frozen dataclasses with every error naming its key, strict YAML, and the
dotted keys MLflow params take."""

from __future__ import annotations

import dataclasses
from typing import Optional

import pytest

from camp import config, typed_yaml


def test_build_dataclass_and_coerce():
    built = typed_yaml.build_dataclass(config.SamplerConfig, {"seed": 3}, "here")
    assert built == config.SamplerConfig(seed=3)
    assert typed_yaml.build_dataclass(config.SamplerConfig, None, "here") == config.SamplerConfig()
    assert typed_yaml.coerce(3, float, "x") == 3.0 and isinstance(typed_yaml.coerce(3, float, "x"), float)
    assert typed_yaml.coerce(None, Optional[int], "x") is None
    with pytest.raises(ValueError, match="here.seed: expected int"):
        typed_yaml.build_dataclass(config.SamplerConfig, {"seed": "3"}, "here")
    with pytest.raises(ValueError, match=r"^here: sampler.name"):
        typed_yaml.build_dataclass(config.SamplerConfig, {"name": "x"}, "here")
    with pytest.raises(ValueError, match=r"here: unknown key\(s\) sed"):
        typed_yaml.build_dataclass(config.SamplerConfig, {"sed": 3}, "here")


def test_flatten_and_to_dict():
    assert typed_yaml.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
    flat = typed_yaml.flatten(dataclasses.asdict(config.StudyConfig()))
    assert flat["sampler.seed"] == 42 and flat["pruner.name"] == "median" and flat["n_trials"] == 20


def test_load_yaml_refuses_duplicate_keys_and_non_mappings(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("a: 1\nb:\n  c: 2\n  c: 3\n")
    with pytest.raises(ValueError, match=r"twice.yaml: YAML error at line 4, column 3: duplicate key 'c' \(first given on line 3\)"):
        typed_yaml.load_yaml(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"expected a mapping with keys x, y$"):
        typed_yaml.load_yaml(path, ("x", "y"))
    path.write_text("")
    assert typed_yaml.load_yaml(path) == {}
