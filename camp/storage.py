"""Optuna study storage for camp, and recovery from dead, stopped or interrupted workers.

Storage defaults to a journal file under mlruns/ (several processes on one machine); an RDB URL
(postgresql://...) is shared by workers on many machines, with Optuna's heartbeat on.

Dead and stopped workers:
- RDB storages run Optuna's heartbeat: a trial whose worker stopped beating for
  $CAMP_HEARTBEAT_GRACE seconds (default 120; beats every $CAMP_HEARTBEAT_INTERVAL, default 30) is
  failed by the next worker that starts a trial, its MLflow run is ended KILLED, and its parameters
  are re-queued (`RetryHeartbeatStaleTrialCallback`, at most twice).
- Optuna's JournalStorage has no heartbeat (5.0): on one machine a trial whose worker process is gone
  is failed, killed and re-queued the same way after each trial and at sweep start and end.
"""

from __future__ import annotations

import copy
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled

from camp import names, tracking
from camp.interrupts import while_interrupted

DEFAULT_JOURNAL = Path("mlruns/optuna.journal")
STATE = optuna.trial.TrialState
STORAGE_ENV = "CAMP_STORAGE"  # --storage default; how worker processes get the URL (never on a command line)
HEARTBEAT_INTERVAL = 30  # seconds between heartbeats of a running trial ($CAMP_HEARTBEAT_INTERVAL)
HEARTBEAT_GRACE = 120  # a trial silent this long is failed and re-queued ($CAMP_HEARTBEAT_GRACE)
MAX_RETRY = 2  # times a dead worker's trial is re-queued


def _env_seconds(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"${name} must be a whole number of seconds, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"${name} must be >= 1, got {value}")
    return value


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace) in seconds from $CAMP_HEARTBEAT_INTERVAL / $CAMP_HEARTBEAT_GRACE."""
    interval = _env_seconds("CAMP_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL)
    grace = _env_seconds("CAMP_HEARTBEAT_GRACE", max(HEARTBEAT_GRACE, 2 * interval))
    if grace <= interval:
        raise ValueError(f"$CAMP_HEARTBEAT_GRACE ({grace}) must be longer than $CAMP_HEARTBEAT_INTERVAL ({interval})")
    return interval, grace


def is_journal(url: str | None) -> bool:
    return not url or url.startswith("journal:") or url.endswith((".journal", ".log"))


def make_storage(url: str | None):
    """Optuna storage from a URL: default/`journal:PATH`/*.journal -> journal file; else RDB with heartbeat."""
    if is_journal(url):
        path = Path(url[len("journal:"):] if url and url.startswith("journal:") else (url or DEFAULT_JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_journal_tail(path)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    mlflow_uri = tracking.tracking_uri()
    if url == mlflow_uri or (url.startswith("sqlite:") and os.path.abspath(url.split("///", 1)[-1]) ==
                             os.path.abspath(mlflow_uri.split("///", 1)[-1])):
        raise ValueError(f"--storage {tracking.mask_url(url)} is MLflow's own database; Optuna needs a "
                         "separate one (both keep an alembic_version table)")
    import sqlalchemy.exc

    interval, grace = heartbeat_settings()
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    error: Exception | None = None
    for attempt in range(3):  # machines starting together race to create the tables: the losers retry
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=interval,
                                                  grace_period=grace, heartbeat_stale_trial_callback=StaleTrialCallback())
        except ImportError as import_error:
            raise ValueError(f"--storage {tracking.mask_url(url)}: {tracking.mask_secrets(import_error)} "
                             "(PostgreSQL needs the psycopg package: pip install 'psycopg[binary]')") from None
        except sqlalchemy.exc.SQLAlchemyError as db_error:
            error = db_error
            time.sleep(1 + 2 * attempt)
    first_line = tracking.mask_secrets(str(error).strip().splitlines()[0] if str(error).strip() else repr(error))
    raise ValueError(f"cannot open the Optuna storage {tracking.mask_url(url)}: {first_line}")


def repair_journal_tail(path: Path) -> int:
    """Cut a last record that a crash left half-written (no final newline), with a warning naming the file;
    returns the bytes removed. Appending onto such a line would break every later read of the journal.
    Done under the journal's own lock, so a record another process is writing is never mistaken for one."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 1))
            if handle.read(1) == b"\n":
                return 0
            # find the last newline: everything after it is the partial record
            position, chunk = size, 1 << 16
            end = 0
            while position > 0:
                start = max(0, position - chunk)
                handle.seek(start)
                found = handle.read(position - start).rfind(b"\n")
                if found >= 0:
                    end = start + found + 1
                    break
                position = start
            handle.truncate(end)
    finally:
        lock.release()
    removed = size - end
    print(f"camp: warning: {path}: its last record was cut off ({removed} bytes, left by a crash mid-write); "
          "removed it so the journal stays readable", file=sys.stderr)
    return removed


def worker_id() -> str:
    """`host:pid` of this process, stored on each trial it runs (user attr `worker`)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a dead child nobody has waited for yet is a zombie: gone for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def kill_trial_run(trial: optuna.trial.FrozenTrial, reason: str) -> bool:
    """End a failed trial's MLflow run as KILLED (tagged `optuna.state=FAIL`, `camp.killed=reason`) if it is
    still RUNNING. Returns whether it changed anything; never raises (prints a warning instead)."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id:
        return False
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        if client.get_run(run_id).info.status not in ("RUNNING", "SCHEDULED"):
            return False
        client.set_tag(run_id, names.STATE, "FAIL")
        client.set_tag(run_id, names.KILLED, reason[:500])
        client.set_terminated(run_id, "KILLED")
        return True
    except Exception as error:  # the tracking server may be gone too: the end-of-sweep tidy retries
        print(f"warning: could not mark MLflow run {run_id} (trial {trial.number}) killed: "
              f"{tracking.mask_secrets(error)}", file=sys.stderr)
        return False


def _kill_orphaned_parent(trial: optuna.trial.FrozenTrial) -> None:
    """A dead worker that was a sweep's main process leaves its parent `sweep-*` run RUNNING: end it KILLED."""
    run_id, owner = trial.user_attrs.get("mlflow_run_id"), trial.user_attrs.get("worker")
    if not run_id or not owner:
        return
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        parent_id = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
        parent = client.get_run(parent_id) if parent_id else None
        if parent and parent.info.status == "RUNNING" and parent.data.tags.get(names.WORKER) == owner:
            client.set_tag(parent_id, names.STATUS, f"main process {owner} lost")
            client.set_terminated(parent_id, "KILLED")
    except Exception as error:
        print(f"warning: could not check the parent run of trial {trial.number}: {tracking.mask_secrets(error)}",
              file=sys.stderr)


class StaleTrialCallback:
    """Optuna's heartbeat (or a dead local process) failed a trial: end its MLflow run KILLED, then re-queue
    its parameters with Optuna's `RetryHeartbeatStaleTrialCallback` (the 5.0 name of
    `RetryFailedTrialCallback`), at most `max_retry` times. The re-queued trial gets a new number."""

    def __init__(self, max_retry: int = MAX_RETRY):
        self.max_retry = max_retry
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str | None = None) -> None:
        reason = reason or (f"no heartbeat from worker {trial.user_attrs.get('worker', '?')} "
                            f"for {heartbeat_settings()[1]} s (killed or lost)")
        kill_trial_run(trial, reason)
        _kill_orphaned_parent(trial)
        queued = copy.deepcopy(trial)  # the retry gets its own worker and MLflow run
        queued.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("mlflow_run_id", "worker")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retries = len(optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial)) + 1
            self._retry(study, queued)
        requeued = retries <= self.max_retry
        print(f"[trial {trial.number:>3}] FAIL     {reason}; MLflow run killed; "
              + ("parameters re-queued" if requeued else f"not re-queued (already retried {retries - 1}x)"),
              flush=True)


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Mark a RUNNING trial FAIL; False when another process finished or failed it first."""
    try:
        return bool(study._storage.set_trial_state_values(trial._trial_id, state=STATE.FAIL))
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
        return False


def reap_dead_local_workers(study: optuna.Study, gone: set[int] | None = None, requeue: bool = True) -> int:
    """Fail the RUNNING trials of worker processes on this machine that no longer exist (or whose pid is in
    `gone`): kill their MLflow runs and (with `requeue`) re-queue their parameters. Works for every
    storage, the journal included; other machines' trials are left to the heartbeat. Without `gone`, only
    storages without a heartbeat (the journal) are checked: RDB storages rely on Optuna's. Returns the count."""
    if gone is None and is_heartbeat_enabled(study._storage):
        return 0
    host, reaped = socket.gethostname(), 0
    callback = StaleTrialCallback()
    for trial in study.get_trials(deepcopy=False, states=(STATE.RUNNING,)):
        owner = str(trial.user_attrs.get("worker", ""))
        owner_host, _, pid_text = owner.rpartition(":")
        if owner_host != host or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or (pid not in (gone or set()) and _alive(pid)):
            continue
        if not fail_trial(study, trial):
            continue
        reaped += 1
        failed = study._storage.get_trial(trial._trial_id)
        reason = f"worker process {owner} is gone"
        if requeue:
            callback(study, failed, reason=reason)
        else:
            kill_trial_run(failed, reason + " (sweep interrupted)")
    return reaped


def end_stale_sweep_runs(study_name: str) -> int:
    """`sweep-<study>` parent runs left RUNNING by a main process on this machine that no longer exists (a
    crash, a full MLflow store): ended KILLED and tagged why, so a rerun repairs them. Returns the count."""
    from mlflow import MlflowClient

    host, ended = socket.gethostname(), 0
    try:
        runs = MlflowClient().search_runs(
            [experiment.experiment_id for experiment in MlflowClient().search_experiments()],
            filter_string=f"tags.`{names.ROLE}` = 'sweep' and tags.`{names.STUDY}` = '{study_name}' "
                          "and attributes.status = 'RUNNING'", max_results=1000)
    except Exception as error:  # noqa: BLE001 - a store that cannot be searched is reported when the sweep logs
        print(f"warning: could not look for stale sweep runs: {tracking.mask_secrets(error)}", file=sys.stderr)
        return 0
    for run in runs:
        owner = run.data.tags.get(names.WORKER, "")
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue  # another machine's (its own rerun repairs it) or still running
        try:
            MlflowClient().set_tag(run.info.run_id, names.STATUS, f"main process {owner} gone: ended by a later sweep")
            MlflowClient().set_terminated(run.info.run_id, "KILLED")
            ended += 1
        except Exception as error:  # noqa: BLE001
            print(f"warning: could not end stale sweep run {run.info.run_id}: {tracking.mask_secrets(error)}",
                  file=sys.stderr)
    return ended


def tidy_study(study: optuna.Study) -> None:
    """Bring both stores in line after dead or interrupted workers: heartbeat-stale trials (RDB), trials of
    gone local processes, and FAIL trials whose MLflow run is still RUNNING (ended KILLED)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # no-op without heartbeat (journal)
    reap_dead_local_workers(study)
    for trial in study.get_trials(deepcopy=False, states=(STATE.FAIL,)):
        kill_trial_run(trial, "trial failed while its MLflow run was left running")


def end_killed_run(run_id: str) -> None:
    """Tag the trial's run and end it as KILLED; each step retried (`while_interrupted`), the second writes
    the status directly (MLflow pops the active run before it writes, so a failed write leaves nothing to end)."""
    import mlflow

    def end():
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run("KILLED")
        else:
            mlflow.MlflowClient().set_terminated(run_id, "KILLED")
    while_interrupted(lambda: mlflow.set_tags({names.STATE: "FAIL", names.KILLED: "interrupted (SIGINT/SIGTERM)"}),
                      f"tag MLflow run {run_id} as killed")
    while_interrupted(end, f"end MLflow run {run_id}")


def stop_own_trials(study: optuna.Study, parent_run_id: str) -> None:
    """After an interrupt: no trial of this process stays RUNNING in Optuna or MLflow."""
    import mlflow

    while mlflow.active_run() is not None and mlflow.active_run().info.run_id != parent_run_id:
        mlflow.set_tag(names.KILLED, "interrupted (SIGINT/SIGTERM)")
        mlflow.end_run("KILLED")
    me = worker_id()
    for trial in study.get_trials(deepcopy=False, states=(STATE.RUNNING,)):
        if trial.user_attrs.get("worker") == me and fail_trial(study, trial):
            kill_trial_run(study._storage.get_trial(trial._trial_id), "interrupted (SIGINT/SIGTERM)")
