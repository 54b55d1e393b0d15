"""Finalize's retraining on train + validation (`study.finalize.train_on_validation`), as AutoGluon's
refit_full and FLAML's retrain_full do: the members of the model finalize chose on validation each train
once more on train + validation, for the epochs their own run selected (best epoch + 1, the schedule then
decaying to zero there) and with no early stopping, since no split is left to stop on. The bundle
registered holds these, with the weights and test-time augmentation chosen before. Validation no longer
scores them; test does, so promotion compares on test and the report says so.

The members train in child processes, as many at once as the sweep had workers (TensorFlow's threads
shared out among them), each an MLflow run `refit-full-<trial>` nested under the sweep and tagged
`camp.finalist_of` (its trial) and `camp.fit_on`. They start only if they are expected to end within
the time left of `study.timeout` (the part `finalize.share` reserved); otherwise finalize registers the
models as trained on train, and says why.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import mlflow

from camp import names, tracking
from camp.run_config import RunConfig, prepare_dataset, run_config_from_meta


def config_for(config: RunConfig, best_epoch: int) -> RunConfig:
    """A member's config fit on train + validation: a CNN for `best_epoch + 1` epochs (its schedule ends
    there), all of them run; the classical family as it was (one fitting pass)."""
    model = config.model
    if model.family == "cnn":
        epochs = max(1, best_epoch + 1)
        model = dataclasses.replace(model, max_epochs=epochs, min_epochs=epochs, patience=epochs,
                                    warmup_epochs=min(model.warmup_epochs, epochs - 1))
    return dataclasses.replace(config, model=model, fit_on=names.TRAIN_AND_VALIDATION)


def plan_members(trials) -> list[dict]:
    """For each distinct member trial: its run, config fit on train + validation, and expected seconds
    (its run's time, scaled by the epochs and by the images it now fits on)."""
    client = mlflow.MlflowClient()
    planned, seen = [], set()
    for trial in trials:
        if trial.number in seen:
            continue
        seen.add(trial.number)
        run_id = trial.user_attrs["mlflow_run_id"]
        meta = mlflow.artifacts.load_dict(f"runs:/{run_id}/bundle/camp.json")
        history = client.get_metric_history(run_id, "best_epoch")
        best_epoch = int(history[-1].value) if history else 0
        epochs_run = max(1, history[-1].step) if history else 1
        config = config_for(run_config_from_meta(meta), best_epoch)
        dataset, _ = prepare_dataset(config)
        grown = (len(dataset.split("train")) + len(dataset.split("validation"))) / max(1, len(dataset.split("train")))
        seconds = trial.user_attrs.get("seconds")
        epochs_ratio = config.model.max_epochs / epochs_run if config.model.family == "cnn" else 1.0
        planned.append({"trial": trial.number, "source_run": run_id, "config": config,
                        "expected": None if seconds is None else seconds * epochs_ratio * grown})
    return planned


def expected_wall(planned: list[dict], parallel: int) -> float | None:
    """Wall time for the members, `parallel` at a time (longest first); None if any is unknown."""
    if any(member["expected"] is None for member in planned):
        return None
    lanes = [0.0] * max(1, parallel)
    for seconds in sorted((member["expected"] for member in planned), reverse=True):
        lanes[lanes.index(min(lanes))] += seconds
    return max(lanes)


def retrain(trials, study_name: str, parent_run_id: str, time_left: float | None, workers: int) -> dict | None:
    """Train the member trials on train + validation; {trial number: its new run id}, or None (with the
    reason printed) when they would not end within `time_left` seconds."""
    planned = plan_members(trials)
    parallel = max(1, min(workers, len(planned)))
    wall = expected_wall(planned, parallel)
    if time_left is not None and (wall is None or wall > time_left):
        print(f"finalize: train_on_validation: {len(planned)} member(s) need ~{wall or float('nan'):.0f} s, "
              f"{max(0.0, time_left):.0f} s of study.timeout left (raise study.finalize.share): registering the "
              "models fit on train", flush=True)
        return None
    print(f"finalize: train_on_validation: retraining {len(planned)} member(s) on train + validation "
          f"({parallel} at a time" + (f", ~{wall:.0f} s" if wall else "") + ")", flush=True)
    threads = max(1, (os.cpu_count() or 1) // parallel)
    started, out = time.time(), {}
    with ProcessPoolExecutor(max_workers=parallel, mp_context=get_context("spawn")) as pool:
        futures = {member["trial"]: pool.submit(_train_member, member["config"], mlflow.get_tracking_uri(),
                                                parent_run_id, _tags(study_name, member), threads)
                   for member in planned}
        for trial, future in futures.items():
            try:
                out[trial] = future.result()
            except Exception as error:  # noqa: BLE001 - the models fit on train still stand
                print(f"finalize: train_on_validation: retraining trial #{trial} failed ({type(error).__name__}: "
                      f"{error}); registering the models fit on train", flush=True)
                return None
    print(f"finalize: train_on_validation: trial(s) {', '.join(f'#{t}' for t in out)} retrained in "
          f"{time.time() - started:.0f} s", flush=True)
    return out


def _tags(study_name: str, member: dict) -> dict:
    return {names.STUDY: study_name, names.FINALIST_OF: str(member["trial"]), names.FIT_ON: names.TRAIN_AND_VALIDATION,
            names.ROLE: "refit-full", names.SOURCE_RUN: member["source_run"]}


def _train_member(config: RunConfig, tracking_uri: str, parent_run_id: str, tags: dict, threads: int) -> str:
    """In a child process: one member's training run, nested under the sweep; returns its run id."""
    os.environ["CAMP_THREADS"] = str(threads)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    from camp.train import train  # here: a child process imports TensorFlow after its thread count is set

    tracking.setup(create=False)  # the sweep's store, quiet as the sweep's own processes are
    experiment_id = mlflow.get_run(parent_run_id).info.experiment_id
    with mlflow.start_run(run_name=f"refit-full-{tags[names.FINALIST_OF]}", nested=True, experiment_id=experiment_id,
                          parent_run_id=parent_run_id, tags=tags, log_system_metrics=True):
        return train(config, progress=False).run_id
