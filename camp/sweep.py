"""`camp sweep`: one Optuna study over preprocessing and model knobs; every trial is a nested MLflow
run under one parent run per invocation; at the end the best trial is registered (see registry).

The objective only turns a trial into a `RunConfig` and calls the same `train(config)` as
`camp train`. Storage defaults to a journal file under mlruns/ (several processes on one machine);
`--storage` takes an RDB URL (postgresql://...) for many machines. Re-running resumes the study.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from camp import tracking
from camp.config import StudyFile, load_study_file
from camp.model import ModelConfig
from camp.preprocess import PreprocessConfig
from camp.space import parse_space, resolve, suggest_with
from camp.train import run_config_from, train

DEFAULT_JOURNAL = Path("mlruns/optuna.journal")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def make_storage(url: str | None):
    """Optuna storage from a URL: default/`journal:PATH`/*.journal -> journal file; else RDB."""
    if not url or url.startswith("journal:") or url.endswith((".journal", ".log")):
        path = Path(url[len("journal:"):] if url and url.startswith("journal:") else (url or DEFAULT_JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    mlflow_uri = tracking.tracking_uri()
    if url == mlflow_uri or (url.startswith("sqlite:") and os.path.abspath(url.split("///", 1)[-1]) ==
                             os.path.abspath(mlflow_uri.split("///", 1)[-1])):
        raise ValueError(f"--storage {tracking.mask_url(url)} is MLflow's own database; Optuna needs a "
                         "separate one (both keep an alembic_version table)")
    return optuna.storages.RDBStorage(
        url, heartbeat_interval=30, grace_period=120,
        failed_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))


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
    preprocess_knobs = parse_space("preprocess", study_file.preprocess, PreprocessConfig, study_file.path)
    model_knobs = parse_space("model", study_file.model, ModelConfig, study_file.path)
    n_trials = args.n_trials or study_file.study.n_trials
    if n_trials < 1:
        raise ValueError(f"--n-trials must be >= 1, got {n_trials}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    return Plan(study_file, preprocess_knobs, model_knobs, n_trials, args.timeout or study_file.study.timeout,
                args.storage, args.data)


def config_for(trial: optuna.Trial, plan: Plan):
    """A trial -> the run config (all the objective does before calling train)."""
    suggest = suggest_with(trial)
    preprocess = resolve(plan.preprocess_knobs, suggest, dataclasses.asdict(PreprocessConfig()))
    model = resolve(plan.model_knobs, suggest, dataclasses.asdict(ModelConfig()))
    return run_config_from(plan.study_file, preprocess, model, plan.data_path)


def make_objective(plan: Plan, parent_run_id: str):
    import mlflow

    metric = plan.study_file.study.metric

    def objective(trial: optuna.Trial) -> float:
        config = config_for(trial, plan)

        def report(epoch: int, values: dict) -> None:
            trial.report(values[metric], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} ({metric} {values[metric]:.4f})")

        tags = {"optuna.study": plan.study_file.study.name, "optuna.trial": str(trial.number)}
        pruned = None
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, parent_run_id=parent_run_id, tags=tags) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            try:
                result = train(config, epoch_callback=report, log_model=False, progress=False)
            except optuna.TrialPruned as error:
                pruned = error
                mlflow.set_tag("optuna.state", "PRUNED")
            except KeyboardInterrupt:
                mlflow.set_tag("optuna.state", "FAIL")
                mlflow.end_run("KILLED")
                raise
            except BaseException:
                mlflow.set_tag("optuna.state", "FAIL")
                raise
            else:
                if not math.isfinite(result.value):
                    mlflow.set_tag("optuna.state", "FAIL")
                    raise FloatingPointError(f"{metric} is {result.value}")
                trial.set_user_attr("cache_hit", result.cache_hit)
                trial.set_user_attr("seconds", round(result.seconds, 1))
                mlflow.set_tag("optuna.state", "COMPLETE")
        if pruned is not None:
            raise pruned
        return result.value

    return objective


class Progress:
    """After each trial: done/pruned/failed, best so far, elapsed and an estimate of time left."""

    def __init__(self, plan: Plan, workers: int):
        self.plan, self.workers, self.started = plan, workers, time.time()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        done = sum(state in FINISHED for state in states)
        pruned = states.count(optuna.trial.TrialState.PRUNED)
        failed = states.count(optuna.trial.TrialState.FAIL)
        elapsed = time.time() - self.started
        best = _best(study)
        per_trial = elapsed / max(1, trial.number + 1)
        left = max(0, self.plan.n_trials - done) * per_trial / self.workers
        if self.plan.timeout:
            left = min(left, max(0.0, self.plan.timeout - elapsed))
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        best_text = f"best {best.value:.4f} (#{best.number})" if best else "best -"
        print(f"[trial {trial.number:>3}] {trial.state.name:<8} {value}  | done {done}/{self.plan.n_trials} "
              f"(pruned {pruned}, failed {failed}) | {best_text} | {elapsed / 60:.1f} min, ~{left / 60:.1f} min left",
              flush=True)


def _best(study: optuna.Study):
    try:
        return study.best_trial
    except ValueError:
        return None


def run_worker(plan: Plan, parent_run_id: str, worker_index: int, workers: int) -> None:
    """One worker process: optimise until the study has `n_trials` finished trials or time runs out."""
    import mlflow

    tracking.setup()
    storage = make_storage(plan.storage_url)
    study_config = plan.study_file.study
    existing = optuna.load_study(study_name=study_config.name, storage=storage)
    offset = worker_index * 1000 + len(existing.trials)
    study = optuna.load_study(study_name=study_config.name, storage=storage,
                              sampler=make_sampler(plan.study_file, offset), pruner=make_pruner(plan.study_file))
    remaining = plan.n_trials - sum(t.state in FINISHED for t in study.trials)
    if remaining <= 0:
        return
    failures = {"count": 0}

    def stop_on_failures(study, trial):
        if trial.state == optuna.trial.TrialState.FAIL:
            failures["count"] += 1
            if failures["count"] >= study_config.max_failures:
                print(f"stopping: {failures['count']} failed trials (study.max_failures)", file=sys.stderr)
                study.stop()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(make_objective(plan, parent_run_id), n_trials=remaining, timeout=plan.timeout,
                   catch=(Exception,), gc_after_trial=True,
                   callbacks=[optuna.study.MaxTrialsCallback(plan.n_trials, states=FINISHED), stop_on_failures,
                              Progress(plan, workers)])
    del mlflow


def run_sweep(args) -> int:
    """The `camp sweep` command: plan, create/resume the study, run workers, then report and register."""
    if args.worker_of:
        plan = make_plan(args)
        run_worker(plan, args.worker_of, int(os.environ.get("CAMP_WORKER_INDEX", "1")), args.workers)
        return 0
    import mlflow

    plan = make_plan(args)  # every knob and range checked here, before any trial
    study_config = plan.study_file.study
    tracking.setup()
    storage = make_storage(plan.storage_url)
    study = optuna.create_study(study_name=study_config.name, storage=storage, direction=study_config.direction,
                                load_if_exists=True)
    before = len(study.trials)
    print(f"study {study_config.name!r}: {before} trial(s) so far, target {plan.n_trials} finished; "
          f"storage {tracking.mask_url(plan.storage_url) or DEFAULT_JOURNAL}; MLflow {tracking.mask_url(tracking.tracking_uri())}",
          flush=True)
    if args.workers > 1:
        os.environ.setdefault("CAMP_THREADS", str(max(1, (os.cpu_count() or 1) // args.workers)))
    started = time.time()
    with mlflow.start_run(run_name=f"sweep-{study_config.name}", tags={
            "optuna.study": study_config.name, "camp.role": "sweep", "camp.git_commit": tracking.git_commit(),
            "optuna.storage": tracking.mask_url(plan.storage_url) or str(DEFAULT_JOURNAL)}) as parent:
        mlflow.log_artifact(plan.study_file.path)
        mlflow.log_params({"n_trials": plan.n_trials, "timeout": plan.timeout, "workers": args.workers,
                           "seed": plan.study_file.seed, "metric": study_config.metric,
                           "direction": study_config.direction, "sampler": study_config.sampler.name,
                           "pruner": study_config.pruner.name})
        children = _start_workers(args, parent.info.run_id, plan)
        try:
            run_worker(plan, parent.info.run_id, 0, args.workers)
            for child in children:
                child.wait()
        except KeyboardInterrupt:
            for child in children:
                child.send_signal(signal.SIGINT)
            for child in children:
                child.wait()
            mlflow.set_tag("camp.status", "interrupted")
            mlflow.end_run("KILLED")
            print(f"camp: sweep interrupted; the running trial is marked failed. Rerun the same command to resume "
                  f"study {study_config.name!r}.", file=sys.stderr)
            return 130
        study = optuna.load_study(study_name=study_config.name, storage=storage)
        from camp.sweep_report import register_best, summarise

        summary = summarise(study, plan, before, time.time() - started)
    if summary.get("best_run_id") and not args.no_register:
        register_best(study, plan, summary)
    summary_lines(summary)
    return 0 if summary.get("best_run_id") else 1


def summary_lines(summary: dict) -> None:
    from camp.sweep_report import print_next_steps

    print_next_steps(summary)


def _start_workers(args, parent_run_id: str, plan: Plan) -> list[subprocess.Popen]:
    children = []
    for index in range(1, args.workers):
        command = [sys.executable, "-m", "camp.cli", "sweep", args.config, "--worker-of", parent_run_id,
                   "--n-trials", str(plan.n_trials), "--workers", str(args.workers)]
        if plan.timeout:
            command += ["--timeout", str(plan.timeout)]
        if plan.storage_url:
            command += ["--storage", plan.storage_url]
        if plan.data_path:
            command += ["--data", plan.data_path]
        environment = {**os.environ, "CAMP_WORKER_INDEX": str(index)}
        children.append(subprocess.Popen(command, env=environment))
    return children
