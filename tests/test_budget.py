"""camp.budget: no trial starts that would not fit the study's timeout, and what a trial is expected to cost."""

from __future__ import annotations

import textwrap

import optuna
import pytest

from tests.test_finalize import STUDY


@pytest.mark.parametrize("hog_seconds, stops", [(60.0, True), (2.0, False)])
def test_no_trial_starts_that_would_not_fit_in_the_timeout(tmp_path, monkeypatch, hog_seconds, stops):
    """A study whose CNN trials take ~100 s, 50 s before its timeout: the next CNN trials are not started
    and nothing is trained. The worker stops when no kind of trial fits the time left; while a cheaper
    kind (here HOG) still fits, it goes on, up to MAX_SKIPS_IN_A_ROW proposals that do not fit."""

    from camp import budget
    from camp import objective as objectives
    from camp.config import load_study_file

    path = tmp_path / "fin.yaml"
    path.write_text(textwrap.dedent(STUDY))
    plan = objectives.plan_for(load_study_file(path), 4, 150.0, None, None)
    study = optuna.create_study(direction="maximize")
    distributions = {"model.family": optuna.distributions.CategoricalDistribution(["cnn", "hog_linear"])}
    for family, seconds in (("cnn", 90.0), ("cnn", 110.0), ("hog_linear", hog_seconds)):
        study.add_trial(optuna.trial.create_trial(params={"model.family": family}, distributions=distributions,
                                                  value=0.5, user_attrs={"seconds": seconds, "family": family,
                                                                         "size": 24}))
    for _ in range(budget.MAX_SKIPS_IN_A_ROW + 1):
        study.enqueue_trial({"model.family": "cnn"})
    monkeypatch.setattr(objectives, "train", lambda *a, **k: pytest.fail("a trial that cannot fit was started"))
    objective = objectives.make_objective(plan, parent_run_id="unused", started=__import__("time").time() - 100)
    study.optimize(objective, n_trials=budget.MAX_SKIPS_IN_A_ROW + 1)
    skipped = [t for t in study.trials if "skipped" in t.user_attrs]
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in skipped)
    # stopped at the first skip, or once the sampler proposed MAX_SKIPS_IN_A_ROW trials that do not fit
    assert len(skipped) == (1 if stops else budget.MAX_SKIPS_IN_A_ROW)
    config = objectives.config_for(optuna.trial.FixedTrial({"model.family": "cnn"}), plan)
    assert budget.expected_seconds(study, config) == 110.0  # median of the complete CNN trials (upper middle)
    assert budget.cheapest_seconds(study) == hog_seconds  # the cheaper of the medians (CNN 110, HOG)


def test_a_trial_of_an_unseen_size_is_estimated_by_pixels_and_by_what_is_still_running(monkeypatch):
    """A 64 px CNN after one 48 px CNN of 600 s is expected to take 600 x (64/48)^2 s, not 600; and a
    running 64 px CNN that has already taken longer than that raises the estimate to its own elapsed time."""
    import datetime
    import types

    from camp import budget

    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.6, user_attrs={"seconds": 600.0, "family": "cnn", "size": 48}))
    config = types.SimpleNamespace(model=types.SimpleNamespace(family="cnn"), preprocess=types.SimpleNamespace(size=64))
    assert budget.expected_seconds(study, config) == pytest.approx(600 * (64 / 48) ** 2)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                              user_attrs={"family": "cnn", "size": 64}))
    later = datetime.datetime.now() + datetime.timedelta(seconds=2000)
    monkeypatch.setattr(budget, "_now", lambda: later)
    assert budget.expected_seconds(study, config) == pytest.approx(2000, abs=5)
    assert budget.expected_seconds(study, config, current=study.trials[-1].number) == pytest.approx(600 * (64 / 48) ** 2)


def _family_study(direction: str, cnn: tuple, hog: tuple, n_cnn: int = 2, n_hog: int = 2) -> optuna.Study:
    """A study with complete CNN and HOG trials of the given (value, seconds)."""
    study = optuna.create_study(direction=direction)
    for family, (value, seconds), count in (("cnn", cnn, n_cnn), ("hog_linear", hog, n_hog)):
        for _ in range(count):
            study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"seconds": seconds, "family": family,
                                                                                "size": 64}))
    return study


def test_a_family_both_worse_and_slower_is_set_aside_once_it_has_had_its_share_of_the_time():
    from camp.budget import dominated_by

    study = _family_study("maximize", cnn=(0.15, 30.0), hog=(0.68, 1.5))
    reason = dominated_by(study, "cnn", "maximize", 0.1)
    assert reason and "behind hog_linear" in reason and "0.1500 against 0.6800" in reason
    assert dominated_by(study, "hog_linear", "maximize", 0.1) is None  # better, and cheaper
    assert dominated_by(study, "cnn", "maximize", 0.99) is None  # 60 of 63 s: still under its share
    # judged only after DOMINANCE_MIN_TRIALS of its own
    assert dominated_by(_family_study("maximize", (0.15, 30.0), (0.68, 1.5), n_cnn=1), "cnn", "maximize", 0.1) is None
    # better but slower (the CNN on the full data): never set aside, and HOG, worse but cheaper, neither
    study = _family_study("maximize", cnn=(0.80, 700.0), hog=(0.68, 1.5))
    assert dominated_by(study, "cnn", "maximize", 0.0) is None
    assert dominated_by(study, "hog_linear", "maximize", 0.0) is None
    # "worse" follows the study's direction: a loss, minimised
    assert "behind hog_linear" in dominated_by(_family_study("minimize", (2.0, 30.0), (0.9, 1.5)), "cnn", "minimize", 0.1)


def test_the_sweep_does_not_start_a_dominated_familys_proposals_but_runs_queued_ones(tmp_path, monkeypatch):
    """Sampled CNN proposals behind a cheaper, better HOG family are recorded as skipped and never trained,
    up to MAX_DOMINATED_SKIPS_IN_A_ROW in a row; the next one starts (a sampler that insists explores)."""
    import contextlib
    import dataclasses
    import types

    from camp import budget
    from camp import objective as objectives
    from camp.config import load_study_file

    path = tmp_path / "fin.yaml"
    path.write_text(textwrap.dedent(STUDY))
    study_file = load_study_file(path)
    study_file = dataclasses.replace(study_file, study=dataclasses.replace(study_file.study, dominated_time_share=0.1))
    plan = objectives.plan_for(study_file, 100, None, None, None)
    study = _family_study("maximize", cnn=(0.15, 30.0), hog=(0.68, 1.5))
    study.sampler = optuna.samplers.PartialFixedSampler({"model.family": "cnn"}, optuna.samplers.RandomSampler(seed=0))

    class Started(Exception):
        pass

    def train(config, **kwargs):
        raise Started(config.model.family)

    run = types.SimpleNamespace(info=types.SimpleNamespace(run_id="r"))
    monkeypatch.setattr(objectives, "train", train)
    monkeypatch.setattr("mlflow.start_run", lambda *a, **k: contextlib.nullcontext(run))
    monkeypatch.setattr("mlflow.set_tag", lambda *a, **k: None)
    objective = objectives.make_objective(plan, parent_run_id="unused")
    with pytest.raises(Started, match="cnn"):
        study.optimize(objective, n_trials=budget.MAX_DOMINATED_SKIPS_IN_A_ROW + 1)
    skipped = [t for t in study.trials if "skipped" in t.user_attrs]
    assert len(skipped) == budget.MAX_DOMINATED_SKIPS_IN_A_ROW
    assert all(t.state == optuna.trial.TrialState.PRUNED and "behind hog_linear" in t.user_attrs["skipped"]
               for t in skipped)
    # a queued CNN (a warm start) is what the study was told to run: it starts at once
    study.enqueue_trial({"model.family": "cnn"})
    with pytest.raises(Started):
        study.optimize(objective, n_trials=1)
    assert len([t for t in study.trials if "skipped" in t.user_attrs]) == budget.MAX_DOMINATED_SKIPS_IN_A_ROW
