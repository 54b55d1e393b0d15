"""camp.refit: which trials become finalists, what a finalist changes, and the refit phase end to end on
synthetic data (finalists run on the sweep's workers, nested and tagged, and join the ensemble's pool)."""

from __future__ import annotations

import textwrap

import optuna
import pytest

from camp import refit
from camp.config import FinalizeConfig
from camp.model import ModelConfig
from camp.preprocess import PreprocessConfig
from camp.run_config import RunConfig


def _study(trials):
    study = optuna.create_study(direction="maximize")
    distributions = {"model.family": optuna.distributions.CategoricalDistribution(["cnn", "hog_linear"]),
                     "model.replica": optuna.distributions.CategoricalDistribution([0, 1]),
                     "model.dropout": optuna.distributions.FloatDistribution(0.1, 0.4)}
    for value, params, attrs in trials:
        study.add_trial(optuna.trial.create_trial(
            value=value, params=params, distributions={k: distributions[k] for k in params},
            user_attrs={"seconds": 100.0, "size": 64, "family": params["model.family"], **attrs}))
    return study


def test_finalists_are_the_best_distinct_cnn_configs_and_a_resume_does_not_repeat_them():
    study = _study([
        (0.80, {"model.family": "cnn", "model.replica": 0, "model.dropout": 0.3}, {}),
        (0.79, {"model.family": "cnn", "model.replica": 1, "model.dropout": 0.3}, {}),  # a replica: same config
        (0.85, {"model.family": "hog_linear"}, {}),  # one fitting pass: more epochs change nothing
        (0.70, {"model.family": "cnn", "model.replica": 0, "model.dropout": 0.2}, {}),
        (0.60, {"model.family": "cnn", "model.replica": 0, "model.dropout": 0.1}, {}),
    ])
    two = FinalizeConfig(refit=2)
    assert [t.number for t in refit.choose(study, two, True)] == [0, 3]
    # at a new input size the classical model is worth refitting too
    assert [t.number for t in refit.choose(study, FinalizeConfig(refit=2, refit_size=96), True)] == [2, 0]
    queued = refit.enqueue(study, two, True)
    assert [source for source, _ in queued] == [0, 3]
    assert queued[0][1] == pytest.approx(200.0)  # 100 s at twice the epochs
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs[refit.REFIT_OF] for t in waiting] == [0, 3]
    assert waiting[0].user_attrs[refit.REFIT] == {"epochs_factor": 2.0, "size": 0}
    assert refit.enqueue(study, two, True) == []  # a resumed study queues them once


def test_a_finalist_trains_longer_and_at_its_new_size():
    config = RunConfig(preprocess=PreprocessConfig(size=64),
                       model=ModelConfig(max_epochs=20, patience=20, min_epochs=10, lr_schedule="cosine"))
    longer = refit.apply(config, {"epochs_factor": 2.0, "size": 0})
    assert (longer.model.max_epochs, longer.model.patience, longer.model.min_epochs) == (40, 40, 20)
    assert longer.preprocess.size == 64 and longer.model.lr_schedule == "cosine"
    assert refit.apply(config, {"epochs_factor": 1.0, "size": 96}).preprocess.size == 96
    hog = RunConfig(model=ModelConfig(family="hog_linear"))
    assert refit.apply(hog, {"epochs_factor": 3.0, "size": 0}).model == hog.model


def test_the_search_keeps_its_share_of_the_timeout_for_the_finalists():
    assert refit.search_timeout(1000, FinalizeConfig(refit=2, share=0.3)) == pytest.approx(700)
    assert refit.search_timeout(1000, FinalizeConfig()) == 1000
    assert refit.search_timeout(1000, FinalizeConfig(distill=6, share=0.25)) == pytest.approx(750)  # the student's
    assert refit.search_timeout(None, FinalizeConfig(refit=2, share=0.3)) is None
    with pytest.raises(ValueError, match="finalize.refit and finalize.distill are 0"):
        FinalizeConfig(share=0.3)
    with pytest.raises(ValueError, match="finalize.epochs_factor"):
        FinalizeConfig(refit=1, epochs_factor=0.5)


STUDY = """
study:
  name: refit
  n_trials: 3
  sampler: {name: tpe, seed: 3, n_startup_trials: 2}
  pruner: {name: none}
  warm_start:
    - model: {dropout: 0.2}
  finalize: {ensemble: caruana, max_members: 3, refit: 2, epochs_factor: 2}
data: {label_map: camp5}
seed: 3
preprocess: {crop_method: none, mode: gray, size: 24}
model:
  dropout: {float: [0.1, 0.4], step: 0.1}
  conv_blocks: 2
  filters: 8
  dense_units: 16
  max_epochs: 2
  min_epochs: 1
  patience: 2
  lr_schedule: cosine
  learning_rate: 0.003
"""


@pytest.mark.slow
def test_the_refit_phase_trains_finalists_on_the_workers_nested_and_tagged(isolated, synthetic_data, capsys):
    import mlflow

    from camp import cli

    path = isolated / "refit.yaml"
    path.write_text(textwrap.dedent(STUDY))
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", str(path), "--data", str(synthetic_data), "--storage", str(journal), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "refit: 2 finalist(s) of trial(s)" in out
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="refit", storage=storage)
    finalists = [t for t in study.trials if refit.REFIT_OF in t.user_attrs]
    assert len(finalists) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in finalists)
    # a worker that found the queue empty leaves one not-started trial (study.queued_only), as camp ablate does
    sources = {t.number: t for t in study.trials if refit.REFIT_OF not in t.user_attrs and "skipped" not in t.user_attrs}
    assert len(sources) == 3
    runs = mlflow.search_runs(output_format="list")
    parent = next(run for run in runs if run.data.tags.get("camp.role") == "sweep")
    for finalist in finalists:
        source = sources[finalist.user_attrs[refit.REFIT_OF]]
        assert finalist.params == source.params
        run = mlflow.get_run(finalist.user_attrs["mlflow_run_id"])
        assert run.info.run_name == f"finalist-{finalist.number}"
        assert run.data.tags["camp.finalist_of"] == str(source.number)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["model.max_epochs"] == "4"  # twice the search's 2 epochs
    # a rerun finds every trial finished and queues no finalist again
    assert cli.main(["sweep", str(path), "--data", str(synthetic_data), "--storage", str(journal)]) == 0
    study = optuna.load_study(study_name="refit", storage=storage)
    assert sum(refit.REFIT_OF in t.user_attrs for t in study.trials) == 2
