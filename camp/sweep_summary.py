"""What a sweep leaves behind: Optuna's plots and a best-trials table on the parent run, a summary,
the best trial registered as `camp-classifier` (champion only if it improves, once even when several
machines finish together), and where to look next."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import optuna

from camp import budget, names, promotion, registry, run_config, tracking
from camp.registry import CHAMPION, MODEL_NAME
from camp.study_plots import study_plots

STATE = optuna.trial.TrialState
FINISHED = (STATE.COMPLETE, STATE.PRUNED)
ADVISORY_LOCK_KEY = int(hashlib.sha1(b"camp-champion").hexdigest()[:15], 16)


def trial_counts(trials) -> dict[str, int]:
    """Complete, pruned (stopped by the pruner), skipped (never started: they would not fit the time left;
    Optuna records them as pruned) and failed trials."""
    skipped = sum("skipped" in t.user_attrs for t in trials)
    return {"complete": sum(t.state == STATE.COMPLETE for t in trials),
            "pruned": sum(t.state == STATE.PRUNED for t in trials) - skipped, "skipped": skipped,
            "failed": sum(t.state == STATE.FAIL for t in trials)}


def summarise(study: optuna.Study, plan, before: int, seconds: float) -> dict:
    """Counts, best values (overall and per preprocessing mode), cache hit rate; logged to the active run."""
    import mlflow

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == STATE.COMPLETE]
    summary = {"study": study.study_name, "metric": plan.study_file.study.metric, "wall_seconds": round(seconds, 1),
               "trials_total": len(trials), "trials_this_run": len(trials) - before, **trial_counts(trials)}
    hits = [t.user_attrs["cache_hit"] for t in complete if "cache_hit" in t.user_attrs]
    summary["cache_hit_rate"] = round(sum(hits) / len(hits), 3) if hits else None
    by_mode: dict = {}
    for trial in complete:
        mode = trial.params.get("preprocess.mode", "fixed")
        current = by_mode.get(mode)
        if current is None or names.better(trial.value, current["value"], study.direction):
            by_mode[mode] = {"value": round(trial.value, 4), "trial": trial.number}
    summary["best_by_mode"] = by_mode
    if complete:
        best = study.best_trial
        summary.update({"best_value": round(best.value, 4), "best_trial": best.number,
                        "best_run_id": best.user_attrs.get("mlflow_run_id"), "best_params": best.params})
        mlflow.log_metric(f"best/{plan.study_file.study.metric}", best.value)
    mlflow.log_metrics({f"trials/{state}": summary[state] for state in ("complete", "pruned", "skipped", "failed")})
    if summary["cache_hit_rate"] is not None:
        mlflow.log_metric("cache/hit_rate", summary["cache_hit_rate"])
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        (directory / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        (directory / "best_trials.md").write_text(best_trials_table(study))
        study_plots(study, directory)
        mlflow.log_artifacts(str(directory), "study")
    return summary


def best_trials_table(study: optuna.Study, top: int = 10) -> str:
    """A Markdown table of the best complete trials with their params."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == STATE.COMPLETE]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete.sort(key=lambda t: t.value, reverse=reverse)
    knobs = sorted({name for t in complete[:top] for name in t.params})
    lines = ["| trial | value | " + " | ".join(knobs) + " |", "|---" * (len(knobs) + 2) + "|"]
    for trial in complete[:top]:
        cells = [_cell(trial.params.get(name, "")) for name in knobs]
        lines.append(f"| {trial.number} | {trial.value:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def register_best(study: optuna.Study, plan, summary: dict) -> None:
    """Log the best trial's pyfunc into its run, register it, and move @champion only on improvement."""
    import mlflow

    best = study.best_trial
    run_id = best.user_attrs["mlflow_run_id"]
    # the config the run logged, not the trial re-resolved: the study file may have changed since
    meta = mlflow.artifacts.load_dict(f"runs:/{run_id}/bundle/camp.json")
    config = run_config.run_config_from_meta(meta)
    fingerprint = mlflow.get_run(run_id).data.tags[names.DATA_FINGERPRINT]
    info = registry.log_pyfunc_for_run(run_id)
    version, promoted = promotion.register_and_promote(info.model_uri, run_id, best.value, config, fingerprint,
                                                       predictions=promotion.run_predictions(run_id),
                                                       rule=plan.study_file.study.promotion)
    summary.update({"registered_version": version.version, "champion_moved": promoted,
                    "promotion": promotion.verdict(version)})


def print_next_steps(summary: dict) -> None:
    print(json.dumps({k: v for k, v in summary.items() if k != "best_params"}, default=str))
    if summary.get("best_run_id"):
        print(f"\nbest trial #{summary['best_trial']}: {summary['metric']} {summary['best_value']:.4f}")
        for name, value in sorted(summary.get("best_params", {}).items()):
            print(f"  {name} = {round(value, 6) if isinstance(value, float) else value}")  # not 0.15000000000000002
    print("\nwhere to look next:")
    uri = tracking.tracking_uri()
    run = f"experiment 'camp', run 'sweep-{summary['study']}'"
    if uri.startswith(("http://", "https://")):
        print(f"  {tracking.mask_url(uri)}   # the MLflow tracking server's UI ({run})")
    else:
        print(f"  make ui                      # MLflow UI at http://127.0.0.1:5000 ({run})")
    print("  make report                  # the champion's report: reports/<study>/report.html")
    print("  camp predict IMAGE.jpg       # classify with models:/camp-classifier@champion")
    print(f"  store: {tracking.mask_url(tracking.tracking_uri())}")
    if summary.get("registered_version") and not summary.get("champion_moved"):  # said last, where it is seen
        print(f"\n@champion did not move: v{summary['registered_version']} {summary.get('promotion', 'was not promoted')}")


@contextlib.contextmanager
def champion_lock(storage):
    """One registration at a time: a PostgreSQL advisory lock in the Optuna database when the study lives
    there (every machine sees it), else an exclusive file lock on this machine."""
    engine = getattr(storage, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        import sqlalchemy

        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                connection.commit()
        return
    import fcntl

    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    path = Path(tempfile.gettempdir()) / f"camp-champion-{hashlib.sha1(uri.encode()).hexdigest()[:12]}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def register_champion(study: optuna.Study, plan, summary: dict, storage) -> None:
    """Register the best trial once and move @champion at most once for it, even when several sweeps of
    the study (machines) finish together: under `champion_lock`, a run that already has a registered
    version is not registered again. A promotion is recorded as tag `camp.promoted_at` on the version."""
    from mlflow import MlflowClient

    run_id = summary["best_run_id"]
    with champion_lock(storage):
        client = MlflowClient()
        existing = client.search_model_versions(f"name='{MODEL_NAME}' and run_id='{run_id}'")
        if existing:
            version = min(existing, key=lambda v: int(v.version))
            try:
                champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version
            except Exception:
                champion = None
            summary.update({"registered_version": version.version, "champion_moved": False,
                            "promotion": "was registered by an earlier run of this study"})
            print(f"trial #{summary['best_trial']} is already registered as {MODEL_NAME} v{version.version}"
                  + (f" (@{CHAMPION})" if str(champion) == str(version.version) else f"; @{CHAMPION} is v{champion}")
                  + ": nothing to register")
            return
        register_best(study, plan, summary)  # a promotion is tagged `camp.promoted_at` by the registry


def finished_count(trials) -> int:
    """Trials that count towards `study.n_trials`: complete or pruned, not those never started (skipped)."""
    return sum(t.state in FINISHED and "skipped" not in t.user_attrs for t in trials)


class Progress:
    """After each trial: done/pruned/failed, best so far, elapsed and an estimate of time left."""

    def __init__(self, plan, workers: int):
        self.plan, self.workers, self.started = plan, workers, time.time()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        done = finished_count(trials)
        counts = trial_counts(trials)
        skipped, pruned, failed = counts["skipped"], counts["pruned"], counts["failed"]
        elapsed = time.time() - self.started
        best = _best(study)
        per_trial = elapsed / max(1, trial.number + 1)
        left = max(0, self.plan.n_trials - done) * per_trial / self.workers
        # an average over seconds-long HOG trials says nothing of a CNN still running: never less than it
        running = budget.running_seconds_left(study)
        if running is None and self.plan.timeout:
            left = self.plan.timeout  # a trial of a kind not yet timed is running: only the timeout bounds it
        elif running is not None:
            left = max(left, running)
        if self.plan.timeout:
            left = min(left, max(0.0, self.plan.timeout - elapsed))
        value = f"{trial.value:.4f}" if trial.state == optuna.trial.TrialState.COMPLETE else "-"
        best_text = f"best {best.value:.4f} (#{best.number})" if best else "best -"
        state = "SKIPPED" if "skipped" in trial.user_attrs else trial.state.name  # not started: no time left
        print(f"[trial {trial.number:>3}] {state:<8} {value}  | done {done}/{self.plan.n_trials} "
              f"(pruned {pruned}, {f'skipped {skipped}, ' if skipped else ''}failed {failed}) | {best_text} | {elapsed / 60:.1f} min, ~{left / 60:.1f} min left",
              flush=True)


def _best(study: optuna.Study):
    try:
        return study.best_trial
    except ValueError:
        return None


def registered_by_an_earlier_run(study_name: str) -> bool:
    """Did a finished `sweep-<study>` run register the study's result (tag `camp.registered_version`)? A sweep
    stopped while registering did not: its rerun registers, though it has no trial left to run."""
    import mlflow

    client = mlflow.MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`{names.ROLE}` = 'sweep' and tags.`{names.STUDY}` = '{study_name}'",
                              max_results=1000)
    return any(names.REGISTERED_VERSION in run.data.tags for run in runs)
