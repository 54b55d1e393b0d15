"""A study's plan and its objective: `Plan` (the study file with both knob sections parsed and checked,
before any trial), `config_for(trial, plan)` (a trial -> the `RunConfig` a single `camp train` would take)
and `make_objective`, whose `objective(trial)` turns the trial into that config and calls the same
`train(config)`, inside a nested MLflow run under the sweep's parent run.

What the objective decides besides: whether a trial is started at all (the study's time budget and the
dominated-family rule: camp.budget), and the pruner's reports. Running workers, the study's lifetime and
registration are `camp.sweep`'s.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import optuna

from camp import names, refit
from camp.budget import (
    MAX_DOMINATED_SKIPS_IN_A_ROW,
    MAX_SKIPS_IN_A_ROW,
    cheapest_seconds,
    dominated_by,
    expected_seconds,
)
from camp.config import StudyFile, load_study_file
from camp.interrupts import raise_if_interrupted
from camp.model import ModelConfig
from camp.preprocess import PreprocessConfig
from camp.run_config import run_config_from
from camp.space import parse_space, resolve, suggest_with
from camp.storage import STORAGE_ENV, end_killed_run, heartbeat_settings, worker_id
from camp.train import train


@dataclasses.dataclass
class Plan:
    """Everything a worker needs, resolved and validated before the first trial."""

    study_file: StudyFile
    preprocess_knobs: list
    model_knobs: list
    n_trials: int
    timeout: float | None
    storage_url: str | None
    data_path: str | None


def make_plan(args) -> Plan:
    study_file = load_study_file(args.config)
    n_trials = args.n_trials or study_file.study.n_trials
    if n_trials < 1:
        raise ValueError(f"--n-trials must be >= 1, got {n_trials}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    heartbeat_settings()  # bad $CAMP_HEARTBEAT_* values are errors before any trial
    storage_url = args.storage or os.environ.get(STORAGE_ENV) or None
    if getattr(args, "seed", None) is not None:
        study_file = with_seed(study_file, args.seed)
    if getattr(args, "queued_only", False):  # the refit phase's workers: finalists only
        study_file = refit.queued_only(study_file)
    return plan_for(study_file, n_trials, args.timeout or study_file.study.timeout, storage_url, args.data)


def with_seed(study_file: StudyFile, seed: int) -> StudyFile:
    """The study file under another seed: the training seed and the sampler's (`camp sweep --seed`)."""
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    sampler = dataclasses.replace(study_file.study.sampler, seed=seed)
    return dataclasses.replace(study_file, seed=seed, study=dataclasses.replace(study_file.study, sampler=sampler))


def plan_for(study_file: StudyFile, n_trials: int, timeout: float | None, storage_url: str | None,
             data_path: str | None) -> Plan:
    """A `Plan` for a loaded study file: both knob sections parsed and checked."""
    preprocess_knobs = parse_space("preprocess", study_file.preprocess, PreprocessConfig, study_file.path)
    model_knobs = parse_space("model", study_file.model, ModelConfig, study_file.path)
    return Plan(study_file, preprocess_knobs, model_knobs, n_trials, timeout, storage_url, data_path)


def config_for(trial: optuna.Trial, plan: Plan):
    """A trial -> the run config (all the objective does before calling train)."""
    suggest = suggest_with(trial)
    preprocess = resolve(plan.preprocess_knobs, suggest, dataclasses.asdict(PreprocessConfig()))
    model = resolve(plan.model_knobs, suggest, dataclasses.asdict(ModelConfig()))
    return run_config_from(plan.study_file, preprocess, model, plan.data_path)


def make_objective(plan: Plan, parent_run_id: str, started: float | None = None):
    import mlflow

    study_config = plan.study_file.study
    metric = study_config.metric
    prune_signal = study_config.pruner.signal or metric
    # the pruner ranks by the study's direction: a signal of the other direction is reported negated
    sign = 1.0 if names.OBJECTIVES[prune_signal] == study_config.direction else -1.0
    started = time.time() if started is None else started

    skips: list[int] = []  # this worker's trials not started in a row (they would not fit the time left)
    set_aside: list[int] = []  # and those not started in a row because their family is dominated

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        queued = "fixed_params" in trial.storage.get_trial_system_attrs(trial._trial_id)  # enqueue_trial's mark
        if study_config.queued_only and not queued:
            trial.set_user_attr("skipped", "study.queued_only: no queued trial left")
            trial.study.stop()
            raise optuna.TrialPruned("not started: the queue is empty and study.queued_only samples no trial")
        config = config_for(trial, plan)
        finalist = trial.user_attrs.get(refit.REFIT)
        if finalist:  # the refit phase: the source trial's config with the longer schedule
            config = refit.apply(config, finalist)
        # what kind of trial it is, known while it runs: the budget rule estimates from running trials too
        trial.set_user_attr("family", config.model.family)
        trial.set_user_attr("size", config.preprocess.size)
        share = study_config.dominated_time_share
        # what the study was told to run (warm start, an ablation's cells, finalists) is never set aside
        if share is not None and not queued:
            reason = dominated_by(trial.study, config.model.family, study_config.direction, share)
            if reason and len(set_aside) < MAX_DOMINATED_SKIPS_IN_A_ROW:
                set_aside.append(trial.number)
                trial.set_user_attr("skipped", reason)
                raise optuna.TrialPruned(f"not started: {reason}")
        set_aside.clear()
        if plan.timeout and study_config.fit_in_timeout:
            expected = trial.user_attrs.get(refit.EXPECTED) or expected_seconds(trial.study, config, trial.number)
            left = plan.timeout - (time.time() - started)
            if expected is not None and expected > left:
                trial.set_user_attr("skipped", f"expected {expected:.0f} s > {left:.0f} s left of study.timeout")
                cheapest = cheapest_seconds(trial.study)
                skips.append(trial.number)
                # a cheaper kind of trial (a smaller input, the classical family) may still fit the time left;
                # once none does, or the sampler keeps proposing ones that do not, this worker starts nothing more
                if cheapest is None or cheapest > left or len(skips) >= MAX_SKIPS_IN_A_ROW:
                    trial.study.stop()
                raise optuna.TrialPruned(f"not started: a {config.model.family} trial like this takes ~{expected:.0f} s, "
                                         f"{max(0.0, left):.0f} s of study.timeout left")

        skips.clear()
        # opted in: a trial that started in time also ends in time, its schedule brought forward
        deadline = started + plan.timeout if plan.timeout and study_config.shorten_to_timeout else None
        # a warm-start trial is the floor the study promises not to go below: it always runs to the end
        protected = "warm_start" in trial.user_attrs or refit.REFIT_OF in trial.user_attrs

        def report(epoch: int, values: dict) -> None:
            trial.report(sign * values[prune_signal], epoch)
            if not protected and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} ({prune_signal} {values[prune_signal]:.4f})")

        tags = {names.STUDY: plan.study_file.study.name, names.TRIAL: str(trial.number),
                names.WORKER: worker_id()}
        retried = trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
        if retried is not None:
            tags[names.RETRY_OF] = str(retried)
        if "cell" in trial.user_attrs:
            tags[names.CELL] = trial.user_attrs["cell"]
        if refit.REFIT_OF in trial.user_attrs:
            tags[names.FINALIST_OF] = str(trial.user_attrs[refit.REFIT_OF])
        pruned = None
        run_name = f"finalist-{trial.number}" if refit.REFIT_OF in trial.user_attrs else f"trial-{trial.number}"
        with mlflow.start_run(run_name=run_name, nested=True, parent_run_id=parent_run_id, tags=tags,
                              log_system_metrics=True) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            try:
                result = train(config, epoch_callback=report, progress=False, deadline=deadline)
            except optuna.TrialPruned as error:
                pruned = error
                mlflow.set_tag(names.STATE, "PRUNED")
            except BaseException as error:  # Ctrl-C / SIGTERM: FAIL in Optuna (it re-raises), KILLED here
                raise_if_interrupted(error, lambda: end_killed_run(run.info.run_id))
                mlflow.set_tag(names.STATE, "FAIL")
                raise
            else:
                if not math.isfinite(result.value):
                    mlflow.set_tag(names.STATE, "FAIL")
                    raise FloatingPointError(f"{metric} is {result.value}")
                trial.set_user_attr("cache_hit", result.cache_hit)
                trial.set_user_attr("seconds", round(result.seconds, 1))
                mlflow.set_tag(names.STATE, "COMPLETE")
        if pruned is not None:
            raise pruned
        return result.value

    return objective
