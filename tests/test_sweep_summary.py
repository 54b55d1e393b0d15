"""camp.sweep_summary: what counts towards n_trials, the progress line and the best-trials table."""

from __future__ import annotations

import types

import optuna
import pytest

from camp.sweep_summary import Progress, best_trials_table, finished_count

DISTRIBUTIONS = {"model.dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}


def _study() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for value, dropout in ((0.5, 0.1), (0.7, 0.30000000000000004)):
        study.add_trial(optuna.trial.create_trial(params={"model.dropout": dropout}, distributions=DISTRIBUTIONS,
                                                  value=value))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                              user_attrs={"skipped": "would not fit"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    return study


def test_trials_never_started_do_not_count_towards_n_trials():
    assert finished_count(_study().trials) == 3  # 2 complete + 1 pruned; the skipped and the failed do not


def test_the_progress_line_names_skipped_trials_apart_from_pruned_ones(capsys):
    study = _study()
    plan = types.SimpleNamespace(n_trials=6, timeout=None)
    Progress(plan, workers=1)(study, study.trials[3])
    line = capsys.readouterr().out
    assert "[trial   3] SKIPPED" in line and "done 3/6 (pruned 1, skipped 1, failed 1)" in line
    assert "best 0.7000 (#1)" in line


def test_the_best_trials_table_is_sorted_and_rounded():
    table = best_trials_table(_study()).splitlines()
    assert table[0] == "| trial | value | model.dropout |"
    assert table[2] == "| 1 | 0.7000 | 0.3 |" and table[3] == "| 0 | 0.5000 | 0.1 |"


def test_time_left_is_never_less_than_a_running_trial_needs(capsys, monkeypatch):
    """After a seconds-long HOG trial, while a CNN of a known ~600 s cost has run for 100 s, the line says
    ~500 s are left, not an average over the HOG trial; with a CNN of a kind not yet timed, the timeout."""
    import datetime

    from camp import budget

    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.6, user_attrs={"seconds": 600.0, "family": "cnn", "size": 64}))
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"seconds": 2.0, "family": "hog_linear",
                                                                      "size": 64}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                              user_attrs={"family": "cnn", "size": 64}))
    started = study.trials[2].datetime_start
    monkeypatch.setattr(budget, "_now", lambda: started + datetime.timedelta(seconds=100))
    assert budget.running_seconds_left(study) == pytest.approx(500.0, abs=1.0)
    plan = types.SimpleNamespace(n_trials=40, timeout=1680)
    Progress(plan, workers=2)(study, study.trials[1])
    assert "~8.3 min left" in capsys.readouterr().out  # 500 s; an average over the two would say ~0.0
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                              user_attrs={"family": "cnn", "size": 96}))
    assert budget.running_seconds_left(study) == pytest.approx(600 * (96 / 64) ** 2 - 100, abs=1.0)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                              user_attrs={"family": "unknown", "size": 64}))
    assert budget.running_seconds_left(study) is None
    Progress(plan, workers=2)(study, study.trials[1])
    assert "~28.0 min left" in capsys.readouterr().out


def test_skipped_trials_are_counted_apart_from_pruned_ones():
    import optuna

    from camp.sweep_summary import trial_counts

    state = optuna.trial.TrialState
    trials = [optuna.trial.create_trial(state=state.COMPLETE, value=0.5),
              optuna.trial.create_trial(state=state.PRUNED),
              optuna.trial.create_trial(state=state.PRUNED, user_attrs={"skipped": "expected 900 s > 60 s left"}),
              optuna.trial.create_trial(state=state.PRUNED, user_attrs={"skipped": "expected 900 s > 30 s left"}),
              optuna.trial.create_trial(state=state.FAIL)]
    assert trial_counts(trials) == {"complete": 1, "pruned": 1, "skipped": 2, "failed": 1}
