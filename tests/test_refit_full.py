"""camp.refit_full: the registered model's members retrained on train + validation (what they change, how
long they are expected to take), and end to end on synthetic data: the version is tagged, its members are
nested and fit on train + validation for their selected epochs, it is scored and compared on test, and a
later sweep fit on train alone is compared with it on test too."""

from __future__ import annotations

import textwrap

import pytest

from camp import refit_full
from camp.model import ModelConfig
from camp.run_config import RunConfig, run_config_from_meta


def test_a_member_fit_on_validation_runs_its_selected_epochs_with_no_early_stop():
    config = RunConfig(model=ModelConfig(max_epochs=20, min_epochs=5, patience=5, warmup_epochs=3, lr_schedule="cosine"))
    again = refit_full.config_for(config, best_epoch=11)
    assert again.fit_on == "train+validation" and again.scored_on == "test"
    assert (again.model.max_epochs, again.model.min_epochs, again.model.patience) == (12, 12, 12)
    assert again.model.warmup_epochs == 3 and again.model.lr_schedule == "cosine"
    assert refit_full.config_for(config, best_epoch=0).model.warmup_epochs == 0  # warm-up must stay < epochs
    hog = RunConfig(model=ModelConfig(family="hog_linear"))
    assert refit_full.config_for(hog, best_epoch=0).model == hog.model


def test_fit_on_is_checked_and_a_logged_config_comes_back_fit_on_train():
    with pytest.raises(ValueError, match="fit_on must be one of"):
        RunConfig(fit_on="everything")
    logged = RunConfig(fit_on="train+validation").to_dict()
    assert run_config_from_meta({"config": logged}).fit_on == "train"


def test_the_expected_wall_time_packs_members_into_the_parallel_lanes():
    members = [{"expected": 100.0}, {"expected": 60.0}, {"expected": 50.0}]
    assert refit_full.expected_wall(members, 1) == pytest.approx(210.0)
    assert refit_full.expected_wall(members, 2) == pytest.approx(110.0)  # 100 | 60 + 50
    assert refit_full.expected_wall(members + [{"expected": None}], 2) is None


STUDY = """
study:
  name: {name}
  n_trials: 3
  sampler: {{name: tpe, seed: 5, n_startup_trials: 3}}
  pruner: {{name: none}}
  finalize: {{ensemble: caruana, max_members: 2, train_on_validation: {retrain}}}
data: {{label_map: camp5}}
seed: 5
preprocess: {{crop_method: none, mode: gray, size: 24}}
model:
  family: {{choice: [cnn, hog_linear]}}
  conv_blocks: 2
  filters: 8
  dense_units: 16
  max_epochs: 3
  min_epochs: 1
  patience: 3
  lr_schedule: cosine
  learning_rate: 0.003
  hog_cell: 6
"""


@pytest.mark.slow
def test_a_sweep_retrains_its_members_on_train_and_validation_and_promotes_on_test(isolated, synthetic_data, capsys):
    import mlflow

    from camp import cli, names
    from camp.registry import MODEL_NAME

    path = isolated / "retrain.yaml"
    path.write_text(textwrap.dedent(STUDY.format(name="retrain", retrain="true")))
    assert cli.main(["sweep", str(path), "--data", str(synthetic_data), "--storage", str(isolated / "one.journal")]) == 0
    out = capsys.readouterr().out
    assert "train_on_validation: retraining" in out
    client = mlflow.MlflowClient()
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.tags[names.FIT_ON] == "train+validation"
    assert version.tags[names.METRIC] == "test/macro_f1"
    assert version.tags[names.PROMOTION] == "on test: first champion"
    ensemble_run = client.get_run(version.tags[names.RUN_ID])
    assert ensemble_run.data.tags[names.FIT_ON] == "train+validation"
    assert "test/macro_f1" in ensemble_run.data.metrics and "val/macro_f1" not in ensemble_run.data.metrics
    parent = ensemble_run.data.tags["mlflow.parentRunId"]
    for run_id in ensemble_run.data.tags[names.MEMBERS].split(","):
        member = client.get_run(run_id)
        assert member.info.run_name.startswith("refit-full-") and member.data.tags["mlflow.parentRunId"] == parent
        assert member.data.tags[names.FIT_ON] == "train+validation"
        source = client.get_run(member.data.tags[names.SOURCE_RUN])
        assert source.data.tags[names.TRIAL] == member.data.tags[names.FINALIST_OF]
        if member.data.params["model.family"] == "cnn":  # the source's selected epochs, every one of them run
            best = int(source.data.metrics["best_epoch"])
            assert member.data.params["model.max_epochs"] == str(best + 1)
            assert len(client.get_metric_history(run_id, "train/loss")) == best + 1
            assert not client.get_metric_history(run_id, "val/macro_f1")  # nothing is left to validate on
        assert mlflow.artifacts.load_dict(f"runs:/{run_id}/test_predictions.json")["relpaths"]
    # a later sweep fit on train alone is compared with that champion on test, where both held out
    other = isolated / "plain.yaml"
    other.write_text(textwrap.dedent(STUDY.format(name="plain", retrain="false")))
    assert cli.main(["sweep", str(other), "--data", str(synthetic_data), "--storage", str(isolated / "two.journal")]) == 0
    assert "was fit on train + validation: comparing on test" in capsys.readouterr().out
    assert client.get_model_version(MODEL_NAME, "2").tags[names.PROMOTION].startswith("on test: ")
