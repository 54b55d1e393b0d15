"""camp.interrupts: an interrupt wins over any error raised while it is handled (a store busy under load)."""

from __future__ import annotations

import sqlite3
import textwrap

import optuna
import pytest

from camp.interrupts import while_interrupted

STUDY = """
study: {name: stop, n_trials: 2, pruner: {name: none}}
data: {label_map: camp5}
preprocess: {crop_method: none, mode: gray, size: 24}
model: {conv_blocks: 1, filters: 4, max_epochs: 1, min_epochs: 1}
"""


def test_bookkeeping_is_retried_and_a_last_failure_is_reported_not_raised(monkeypatch, capsys):
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    calls = []

    def busy_twice():
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")

    while_interrupted(busy_twice, "end the run")
    assert len(calls) == 3 and capsys.readouterr().err == ""

    def always_busy():
        raise sqlite3.OperationalError("database is locked")

    while_interrupted(always_busy, "end the run", attempts=3)  # returns: the interrupt is what propagates
    assert "could not end the run: OperationalError: database is locked" in capsys.readouterr().err


def test_ctrl_c_in_a_trial_survives_a_locked_store_and_ends_the_run_killed(isolated, tmp_path, monkeypatch):
    """The trial is interrupted while MLflow's store is locked (a loaded machine): the KeyboardInterrupt,
    not the store's error, leaves `study.optimize` (so the sweep exits 130), and the run still ends KILLED."""
    import mlflow

    from camp import objective, tracking
    from camp.config import load_study_file

    monkeypatch.setattr("time.sleep", lambda seconds: None)
    path = tmp_path / "stop.yaml"
    path.write_text(textwrap.dedent(STUDY))
    plan = objective.plan_for(load_study_file(path), 2, None, None, None)

    def interrupted_train(*args, **kwargs):
        raise KeyboardInterrupt("SIGINT")

    real_set_tags, failures = mlflow.set_tags, []

    def locked_set_tags(tags, *args, **kwargs):
        if "camp.killed" in tags and len(failures) < 2:
            failures.append(1)
            raise sqlite3.OperationalError("database is locked")
        return real_set_tags(tags, *args, **kwargs)

    monkeypatch.setattr(objective, "train", interrupted_train)
    monkeypatch.setattr(mlflow, "set_tags", locked_set_tags)
    tracking.setup()
    study = optuna.create_study(direction="maximize")
    with mlflow.start_run(run_name="sweep-stop") as parent:
        with pytest.raises(KeyboardInterrupt):
            study.optimize(objective.make_objective(plan, parent.info.run_id), n_trials=2, catch=(Exception,))
    assert len(failures) == 2  # the store was busy, and the bookkeeping went on
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]  # no second trial started
    run = mlflow.get_run(study.trials[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["camp.killed"].startswith("interrupted")


def test_an_interrupt_tensorflow_turned_into_another_error_still_stops_the_sweep(isolated, tmp_path, monkeypatch):
    """Ctrl-C landing inside `model.predict` leaves TensorFlow as RuntimeError ("Exiting device scope without
    proper scope nesting"): the trial is still failed as interrupted, its run KILLED, and no next trial runs."""
    import signal

    import mlflow

    from camp import objective, tracking
    from camp.config import load_study_file
    from camp.interrupts import interrupted, interrupts_raise_once

    path = tmp_path / "stop.yaml"
    path.write_text(textwrap.dedent(STUDY))
    plan = objective.plan_for(load_study_file(path), 2, None, None, None)

    def train_interrupted_inside_tensorflow(*args, **kwargs):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise RuntimeError("Exiting device scope without proper scope nesting") from None

    monkeypatch.setattr(objective, "train", train_interrupted_inside_tensorflow)
    tracking.setup()
    study = optuna.create_study(direction="maximize")
    with pytest.raises(KeyboardInterrupt) as raised:
        with interrupts_raise_once():
            with mlflow.start_run(run_name="sweep-stop") as parent:
                study.optimize(objective.make_objective(plan, parent.info.run_id), n_trials=2, catch=(Exception,))
    assert str(raised.value) == "SIGINT" and interrupted() is None  # forgotten once the command is over
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
    run = mlflow.get_run(study.trials[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["camp.killed"].startswith("interrupted")


def test_any_error_after_an_interrupt_leaves_the_command_as_the_interrupt():
    import signal

    from camp.interrupts import interrupts_raise_once

    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with interrupts_raise_once():
            try:
                signal.raise_signal(signal.SIGTERM)
            except KeyboardInterrupt:
                raise RuntimeError("a scope's own error") from None
    with pytest.raises(RuntimeError):  # without an interrupt, an error is itself
        with interrupts_raise_once():
            raise RuntimeError("not an interrupt")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
