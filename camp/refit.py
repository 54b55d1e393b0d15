"""Finalize's refit phase (`study.finalize.refit`): after the search, the best distinct configs train
again as finalists, with a schedule `epochs_factor` times as long (it still decays to zero at its new
end) and optionally at a larger input (`refit_size`), in the part of `study.timeout` that
`finalize.share` reserved.

A finalist is an Optuna trial queued with its source trial's parameters and a user attribute saying
what to change, so the sweep's own workers run it in parallel, on the same `train(config)`, as an MLflow
run nested under the sweep (tag `camp.finalist_of`). Being a complete trial like any other, it is an
ensemble candidate beside the trial it came from, and finalize picks on validation as before.
"""

from __future__ import annotations

import dataclasses

import optuna

COMPLETE = optuna.trial.TrialState.COMPLETE
REFIT_OF = "refit_of"  # user attribute: the source trial's number
REFIT = "refit"  # user attribute: what the finalist changes ({"epochs_factor": f, "size": s})
EXPECTED = "expected_seconds"  # user attribute: the finalist's own estimate, for fit_in_timeout


def search_timeout(timeout: float | None, finalize) -> float | None:
    """The search's share of study.timeout: the rest is reserved for the finalists."""
    if not timeout or not finalize.refit:
        return timeout
    return timeout * (1.0 - finalize.share)


def choose(study: optuna.Study, finalize, maximize: bool) -> list[optuna.trial.FrozenTrial]:
    """The `finalize.refit` best complete trials with distinct configs (replicas of one config count once),
    not finalists themselves and not refit already (a resumed study). A classical trial is refit only at
    a new size: more epochs change nothing in a model fitted in one pass."""
    trials = study.get_trials(deepcopy=False)
    done = {t.user_attrs[REFIT_OF] for t in trials if REFIT_OF in t.user_attrs}
    complete = [t for t in trials if t.state == COMPLETE and REFIT_OF not in t.user_attrs and t.value is not None]
    complete.sort(key=lambda t: t.value, reverse=maximize)
    wanted, chosen, seen = finalize.refit - len(done), [], set()
    for trial in complete:
        if len(chosen) >= wanted:
            break
        if trial.params.get("model.family", trial.user_attrs.get("family")) == "hog_linear" and not finalize.refit_size:
            continue
        key = tuple(sorted((name, value) for name, value in trial.params.items() if name != "model.replica"))
        if key not in seen and trial.number not in done:
            chosen.append(trial)
        seen.add(key)
    return chosen


def spec(finalize) -> dict:
    return {"epochs_factor": finalize.epochs_factor, "size": finalize.refit_size}


def expected_seconds(trial: optuna.trial.FrozenTrial, refit: dict) -> float | None:
    """The source trial's time, scaled by the longer schedule (CNN) and the pixel count."""
    seconds, size = trial.user_attrs.get("seconds"), trial.user_attrs.get("size")
    if seconds is None:
        return None
    factor = refit["epochs_factor"] if trial.user_attrs.get("family") == "cnn" else 1.0
    if refit["size"] and size:
        factor *= (refit["size"] / size) ** 2
    return seconds * factor


def enqueue(study: optuna.Study, finalize, maximize: bool) -> list[tuple[int, float | None]]:
    """Queue the finalists; returns (source trial, expected seconds) for each one queued."""
    queued = []
    refit = spec(finalize)
    for trial in choose(study, finalize, maximize):
        expected = expected_seconds(trial, refit)
        study.enqueue_trial(trial.params, user_attrs={REFIT_OF: trial.number, REFIT: refit, EXPECTED: expected},
                            skip_if_exists=False)  # its source trial has these very parameters
        queued.append((trial.number, expected))
    return queued


def apply(config, refit: dict):
    """The finalist's run config: the source trial's, with the longer schedule and the new input size."""
    model = config.model
    if model.family == "cnn":
        factor = refit["epochs_factor"]
        epochs = max(1, round(model.max_epochs * factor))
        model = dataclasses.replace(model, max_epochs=epochs, patience=max(1, round(model.patience * factor)),
                                    min_epochs=min(epochs, round(model.min_epochs * factor)))
    preprocess = config.preprocess
    if refit.get("size"):
        preprocess = dataclasses.replace(preprocess, size=int(refit["size"]))
    return dataclasses.replace(config, model=model, preprocess=preprocess)
