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

import copy
import dataclasses
import time

import optuna

from camp import names

COMPLETE = optuna.trial.TrialState.COMPLETE
REFIT_OF = names.REFIT_OF  # user attribute: the source trial's number
REFIT = "refit"  # user attribute: what the finalist changes ({"epochs_factor": f, "size": s})
EXPECTED = "expected_seconds"  # user attribute: the finalist's own estimate, for fit_in_timeout


def queued_only(study_file):
    """The study file with `study.queued_only` on: the refit phase's workers run the finalists, sample none."""
    return dataclasses.replace(study_file, study=dataclasses.replace(study_file.study, queued_only=True))


def search_timeout(timeout: float | None, finalize) -> float | None:
    """The search's share of study.timeout: the rest is reserved for the finalists (and for the retraining on
    train + validation, camp.refit_full, and for the distilled student, camp.distill)."""
    if not timeout or not (finalize.refit or finalize.train_on_validation or finalize.distill):
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


def run_phase(args, plan, full_timeout: float | None, storage, parent_run_id: str, started: float, children: list,
              run_worker) -> set[int]:
    """Train the finalists (`study.finalize.refit`) on this machine's workers in the time left of
    study.timeout; `children` is refilled with this phase's worker processes (an interrupt stops them).
    Returns the pids of workers that died. `run_worker` is the sweep's worker loop (camp.sweep)."""
    from camp.sweep_summary import finished_count  # here: the config helpers above need none of its imports
    from camp.workers import start_workers, wait_workers  # here: as above

    finalize_config = plan.study_file.study.finalize
    left = None if not full_timeout else full_timeout - (time.time() - started)
    if left is not None and left < 1:
        print("refit: no time left of study.timeout for finalists (raise study.finalize.share)", flush=True)
        return set()
    study = optuna.load_study(study_name=plan.study_file.study.name, storage=storage)
    queued = enqueue(study, finalize_config, names.maximizing(study.direction))
    waiting = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)) if REFIT_OF in t.user_attrs]
    if not waiting:
        return set()
    sources = ", ".join(f"#{t.user_attrs[REFIT_OF]}" for t in waiting)
    print(f"refit: {len(waiting)} finalist(s) of trial(s) {sources} ({finalize_config.epochs_factor:g}x the epochs"
          + (f", input {finalize_config.refit_size}" if finalize_config.refit_size else "")
          + (f"; {left:.0f} s left" if left is not None else "") + ")"
          + ("" if queued else " (queued by an earlier run)"), flush=True)
    phase_args = copy.copy(args)
    phase_args.workers = min(args.workers, len(waiting))
    phase_args.queued_only, phase_args.timeout = True, left
    phase = dataclasses.replace(plan, study_file=queued_only(plan.study_file), timeout=left,
                                n_trials=finished_count(study.trials) + len(waiting))
    children[:] = start_workers(phase_args, parent_run_id, phase)
    run_worker(phase, parent_run_id, 0, phase_args.workers)
    return wait_workers(children)
