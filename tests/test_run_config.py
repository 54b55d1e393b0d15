"""camp.run_config: a study file with fixed knobs and a logged bundle's camp.json give the same RunConfig."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from camp.config import load_study_file
from camp.run_config import RunConfig, fixed_run_config, prepare_dataset, run_config_from_meta


def test_a_bundles_logged_config_reads_back_as_the_run_config(tmp_path, synthetic_data):
    study = tmp_path / "fixed.yaml"
    study.write_text(textwrap.dedent("""
        study: {name: fixed, metric: val/accuracy}
        seed: 5
        preprocess: {mode: gray, size: 32}
        model: {filters: 8, dropout: 0.2}
    """))
    config = fixed_run_config(load_study_file(study), data_path=str(synthetic_data))
    assert isinstance(config, RunConfig) and config.seed == 5 and config.metric == "val/accuracy"
    assert config.preprocess.size == 32 and config.model.filters == 8 and config.direction == "maximize"
    meta = {"config": dataclasses.asdict(config)}
    assert run_config_from_meta(meta) == config  # what registration and the report read


def test_the_dataset_is_loaded_once_per_process(synthetic_data):
    config = RunConfig(data_path=str(synthetic_data))
    first, second = prepare_dataset(config), prepare_dataset(config)
    assert first is second and len(first[1]) >= 16  # the memoised (dataset, fingerprint)


def test_a_study_file_knob_that_is_searched_has_no_fixed_run(tmp_path):
    study = tmp_path / "searched.yaml"
    study.write_text("study: {name: s}\nmodel: {filters: {choice: [8, 16]}}\n")
    with pytest.raises(ValueError, match="filters"):
        fixed_run_config(load_study_file(study))
