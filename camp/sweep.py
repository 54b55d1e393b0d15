"""`camp sweep`: one Optuna study over preprocessing and model knobs; every trial is a nested MLflow
run under one parent run per invocation; at the end the best trial is registered (see registry).

The objective (`camp.objective`) only turns a trial into a `RunConfig` and calls the same
`train(config)` as `camp train`. Storage defaults to a journal file under mlruns/ (several processes on one machine);
`--storage` (or $CAMP_STORAGE) takes an RDB URL (postgresql://...) shared by workers on many
machines. Re-running resumes the study.

Dead and stopped workers are handled in `camp.storage` (heartbeat, re-queue, tidy-up); Ctrl-C /
SIGTERM: the running trial is failed in Optuna, its run ended KILLED, the parent run KILLED, and the
command exits 130 with a message; rerunning resumes the study. The best trial is registered under a
lock (`camp.sweep_summary.champion_lock`), so machines finishing together register it once.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings

import optuna

from camp import names, refit, tracking, warm_start
from camp.config import StudyFile
from camp.finalize import finalize
from camp.interrupts import (
    interrupted,
    interrupts_raise_once,
    quiet_interrupt_tracebacks,
    raise_if_interrupted,
    while_interrupted,
)
from camp.objective import Plan, make_objective, make_plan
from camp.preflight import check_same_data, check_same_space, preflight
from camp.storage import (
    DEFAULT_JOURNAL,
    STATE,
    end_stale_sweep_runs,
    make_storage,
    reap_dead_local_workers,
    stop_own_trials,
    tidy_study,
    worker_id,
)
from camp.sweep_summary import Progress, finished_count, print_next_steps, registered_by_an_earlier_run, summarise
from camp.train import log_datasets
from camp.workers import start_workers, stop_workers, wait_workers


def make_sampler(study_file: StudyFile, offset: int):
    """Seeded sampler; `offset` (worker index, trials already run) keeps workers and resumes distinct."""
    config = study_file.study.sampler
    seed = config.seed + offset
    if config.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.n_startup_trials,
                                      multivariate=config.multivariate)


def make_pruner(study_file: StudyFile):
    config = study_file.study.pruner
    if config.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps)
    if config.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, config.n_warmup_steps))
    return optuna.pruners.NopPruner()


def run_worker(plan: Plan, parent_run_id: str, worker_index: int, workers: int) -> None:
    """One worker process: optimise until the study has `n_trials` finished trials or time runs out."""
    tracking.setup()
    storage = make_storage(plan.storage_url)
    study_config = plan.study_file.study
    existing = optuna.load_study(study_name=study_config.name, storage=storage)
    offset = worker_index * 1000 + len(existing.trials)
    study = optuna.load_study(study_name=study_config.name, storage=storage,
                              sampler=make_sampler(plan.study_file, offset), pruner=make_pruner(plan.study_file))
    remaining = plan.n_trials - finished_count(study.trials)
    if remaining <= 0:
        return
    failures = {"count": 0}
    started = time.time()

    def stop_on_failures(study, trial):
        if trial.state == optuna.trial.TrialState.FAIL:
            failures["count"] += 1
            if failures["count"] >= study_config.max_failures:
                print(f"stopping: {failures['count']} failed trials (study.max_failures)", file=sys.stderr)
                study.stop()

    def stop_at_target(study, trial):
        # Optuna's MaxTrialsCallback, except that trials never started do not count and the other workers'
        # running trials do: a worker whose next trial would overshoot n_trials starts none
        trials = study.get_trials(deepcopy=False)
        if finished_count(trials) + sum(t.state == STATE.RUNNING for t in trials) >= plan.n_trials:
            study.stop()

    def reap(study, trial):  # a sibling worker on this machine died: its trial is failed and re-queued now
        reap_dead_local_workers(study)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_interrupt_tracebacks()
    try:
        # n_trials is stop_at_target's to enforce: a proposal never started (skipped) does not count
        study.optimize(make_objective(plan, parent_run_id, started), n_trials=None, timeout=plan.timeout,
                       catch=(Exception,), gc_after_trial=True,
                       callbacks=[stop_at_target, stop_on_failures,
                                  reap, Progress(plan, workers)])
    except BaseException as error:
        raise_if_interrupted(error, lambda: while_interrupted(lambda: stop_own_trials(study, parent_run_id),
                                                              "mark this worker's trials failed"))
        raise
    if interrupted():  # the interrupt became an error Optuna caught outside the objective: stop all the same
        while_interrupted(lambda: stop_own_trials(study, parent_run_id), "mark this worker's trials failed")
        raise KeyboardInterrupt(interrupted())


def run_sweep(args) -> int:
    """The `camp sweep` command: plan, create/resume the study, run workers, then report and register."""
    with interrupts_raise_once():
        if args.worker_of:
            plan = make_plan(args)
            index = int(os.environ.get("CAMP_WORKER_INDEX", "1"))
            try:
                run_worker(plan, args.worker_of, index, args.workers)
            except KeyboardInterrupt:
                print(f"camp: worker {index} ({worker_id()}) stopped; its running trial is marked failed",
                      file=sys.stderr)
                return 130
            return 0
        return run_study(args)


def run_study(args, role: str = "sweep", queue=None, after=None) -> int:
    """The main process of a study: `camp sweep` (role sweep: warm start, then finalize and register) or
    `camp ablate` (role ablate: `queue(study, plan)` enqueues its cells, `after(study, summary, parent run id)`
    reads the result inside the parent run)."""
    import mlflow

    plan = make_plan(args)  # every knob and range checked here, before any trial
    full_timeout = plan.timeout
    if role == "sweep":  # finalize.share of the timeout is kept for the finalists (camp.refit)
        plan = dataclasses.replace(plan, timeout=refit.search_timeout(plan.timeout, plan.study_file.study.finalize))
    dataset, fingerprint = preflight(plan)
    data_root = str(dataset.root)
    study_config = plan.study_file.study
    tracking.setup()
    storage = make_storage(plan.storage_url)
    study = optuna.create_study(study_name=study_config.name, storage=storage, direction=study_config.direction,
                                load_if_exists=True)
    check_same_data(study, data_root, fingerprint)
    check_same_space(study, plan)
    tidy_study(study)  # trials left running by workers that died in an earlier invocation
    stale = end_stale_sweep_runs(study_config.name)
    if stale:
        print(f"ended {stale} sweep-{study_config.name} run(s) left RUNNING by a main process that is gone", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental in Optuna 5: optuna-dashboard then names the objective
        study.set_metric_names([study_config.metric])
    if queue is None:
        queued = warm_start.enqueue(study, warm_start.warm_start_trials(plan, storage))
        if queued:
            print(f"warm start: {queued} trial(s) queued to run first (study.warm_start)", flush=True)
    else:
        queue(study, plan)
    before = len(study.trials)
    remaining = plan.n_trials - finished_count(study.trials)
    if remaining <= 0 and role == "sweep" and (getattr(args, "no_register", False)
                                               or registered_by_an_earlier_run(study_config.name)):
        # a rerun of a finished and registered sweep: nothing to run, and no empty sweep-* run either
        print(f"study {study_config.name!r} already has {plan.n_trials} finished trial(s) (study.n_trials); "
              f"nothing to run. Raise --n-trials to go on; the champion is unchanged.", flush=True)
        return 0
    if remaining < args.workers:
        if remaining > 0:
            print(f"{remaining} trial(s) to go: starting {remaining} worker(s), not {args.workers}", flush=True)
        args.workers = max(1, remaining)
    print(f"study {study_config.name!r}: {before} trial(s) so far, target {plan.n_trials} finished; "
          f"storage {tracking.mask_url(plan.storage_url) or DEFAULT_JOURNAL}; MLflow {tracking.mask_url(tracking.tracking_uri())}",
          flush=True)
    if args.workers > 1:
        os.environ.setdefault("CAMP_THREADS", str(max(1, (os.cpu_count() or 1) // args.workers)))
    started = time.time()
    run_name = study_config.name if study_config.name.startswith(f"{role}-") else f"{role}-{study_config.name}"
    with mlflow.start_run(run_name=run_name, tags={
            names.STUDY: study_config.name, names.ROLE: role, names.GIT_COMMIT: tracking.git_commit(),
            names.WORKER: worker_id(),
            names.STORAGE: tracking.mask_url(plan.storage_url) or str(DEFAULT_JOURNAL)}, log_system_metrics=True) as parent:
        mlflow.log_artifact(plan.study_file.path)
        mlflow.log_params({"n_trials": plan.n_trials, "timeout": plan.timeout, "workers": args.workers,
                           "seed": plan.study_file.seed, "metric": study_config.metric,
                           "direction": study_config.direction, "sampler": study_config.sampler.name,
                           "pruner": study_config.pruner.name})
        log_datasets(dataset, fingerprint)  # the study's data, on the run the UI lists (its trials nest under it)
        children = start_workers(args, parent.info.run_id, plan)
        try:
            run_worker(plan, parent.info.run_id, 0, args.workers)
            died = wait_workers(children)
            if role == "sweep" and study_config.finalize.refit:
                died |= refit.run_phase(args, plan, full_timeout, storage, parent.info.run_id, started, children,
                                         run_worker)
        except KeyboardInterrupt:
            killed = stop_workers(children)
            study = optuna.load_study(study_name=study_config.name, storage=storage)
            reap_dead_local_workers(study, gone=killed, requeue=False)
            tidy_study(study)
            mlflow.set_tag(names.STATUS, "interrupted")
            mlflow.end_run("KILLED")
            print(f"camp: {role} interrupted; the running trial is marked failed in Optuna and killed in MLflow. "
                  f"Rerun the same command to resume study {study_config.name!r}.", file=sys.stderr, flush=True)
            return 130
        study = optuna.load_study(study_name=study_config.name, storage=storage)
        reap_dead_local_workers(study, gone=died)  # known dead: no need to wait for the heartbeat's grace
        tidy_study(study)

        summary = summarise(study, plan, before, time.time() - started)
        if after is not None:
            return after(study, summary, parent.info.run_id)
    if summary.get("best_run_id") and not args.no_register:
        left = None if not full_timeout else full_timeout - (time.time() - started)
        finalize(study, plan, summary, storage, parent.info.run_id, left, args.workers)
    print_next_steps(summary)
    finished = finished_count(study.trials)
    if finished < plan.n_trials and summary["failed"] >= study_config.max_failures and summary.get("trials_this_run"):
        print(f"camp: the study stopped at {finished}/{plan.n_trials} finished trials after {summary['failed']} "
              "failed ones (study.max_failures): see the failed runs' error.txt", file=sys.stderr)
        return 1
    return 0 if summary.get("best_run_id") else 1
