"""Scaling out on real engines: a PostgreSQL-backed study shared by several `camp sweep` processes, an
`mlflow server` on PostgreSQL with an artifact store, a worker killed mid-trial (kill -9), Ctrl-C, the
champion moved once per improvement, and the storage password nowhere in the MLflow store or output.

The PostgreSQL test starts its own server and MLflow server on free loopback ports with
`make cluster-up` (scripts/cluster.sh) and always stops them with `make cluster-down`. It skips only when the
PostgreSQL server binaries are absent (CI installs the Debian `postgresql` package in .ci/run).
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "sweeps" / "smoke.yaml"
CLUSTER = REPO / "scripts" / "cluster.sh"
STATE = optuna.trial.TrialState


def _pg_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True):
        return Path(candidate).parent
    found = shutil.which("pg_ctl")
    return Path(os.path.realpath(found)).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, seconds: float, what: str, poll: float = 0.5):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def _study_file(directory: Path, name: str, cnn_only: bool = True, **model) -> Path:
    """sweeps/smoke.yaml with its own study name and no pruner (every finished trial is COMPLETE); with
    `cnn_only` (tests that interrupt a trial mid-epoch) without its HOG floor, else as smoke.yaml has it
    (a study whose champion must be promoted: a 2-epoch CNN alone stays near chance)."""
    spec = yaml.safe_load(SMOKE.read_text())
    spec["study"]["name"] = name
    spec["study"]["pruner"] = {"name": "none"}
    if cnn_only:
        spec["study"].pop("warm_start", None)
        model = {"family": "cnn", **model}
    spec["model"].update(model)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _trials(storage, name: str):
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


@pytest.fixture(scope="module")
def cluster():
    """PostgreSQL (databases optuna + mlflow) and an MLflow server, via scripts/cluster.sh, torn down after."""
    pg_bin = _pg_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL server binaries (pg_ctl, initdb) are absent: install the Debian `postgresql` "
                    "package (.ci/run does in CI)")
    directory = Path(tempfile.mkdtemp(prefix="camp-cluster-"))  # not under pytest's private /tmp/pytest-of-*
    pg_port, mlflow_port = _free_port(), _free_port()
    environment = {**os.environ, "CAMP_CLUSTER_DIR": str(directory), "CAMP_PG_PORT": str(pg_port),
                   "CAMP_MLFLOW_PORT": str(mlflow_port), "MLFLOW": str(Path(sys.executable).parent / "mlflow"),
                   "CAMP_MLFLOW_WORKERS": "1"}
    # `make cluster-up` / `make cluster-down` as the README says (the install stamp taken as up to date)
    if shutil.which("make"):
        command = {verb: ["make", "-s", "-C", str(REPO), "-o", ".venv/.installed", f"cluster-{verb}"]
                   for verb in ("up", "down")}
    else:
        command = {verb: ["bash", str(CLUSTER), verb] for verb in ("up", "down")}
    real_pg = None
    try:
        up = subprocess.run(command["up"], env=environment, capture_output=True, text=True, timeout=240)
        assert up.returncode == 0, f"cluster up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        real_pg = os.path.realpath(directory / "pg")
        settings = dict(line.removeprefix("export ").split("=", 1)  # what `source .cluster/env` sets
                        for line in (directory / "env").read_text().splitlines() if line.startswith("export "))
        assert settings["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{mlflow_port}"
        yield {"dir": directory, "password": (directory / "password").read_text().strip(), "pg_bin": pg_bin,
               "pg_port": pg_port, "tracking_uri": settings["MLFLOW_TRACKING_URI"],
               "up_output": up.stdout + up.stderr, "optuna_url": settings["CAMP_STORAGE"]}
    finally:
        down = subprocess.run(command["down"], env=environment, capture_output=True, text=True, timeout=150)
        if down.returncode != 0:  # never leave servers behind: the script itself, by PID
            subprocess.run(["bash", str(CLUSTER), "down"], env=environment, capture_output=True, timeout=150)
        shutil.rmtree(directory, ignore_errors=True)
        if real_pg and not real_pg.startswith(str(directory)):
            shutil.rmtree(real_pg, ignore_errors=True)


def _worker_processes(pid: int) -> list[int]:
    """The `camp sweep --worker-of ...` processes a sweep started (not its other children, e.g. git)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            command = Path(stat).with_name("cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and b"--worker-of" in command:
            found.append(int(stat.split("/")[2]))
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_three_workers_on_postgres_survive_a_killed_worker(cluster, synthetic_data, tmp_path):
    """Machine A (`--workers 2`) and machine B (`--workers 1`) share a PostgreSQL study; A's second worker is
    killed with SIGKILL mid-trial. Optuna's heartbeat fails its trial and re-queues it; its MLflow run ends
    KILLED; both sweeps finish and register the best trial once."""
    from mlflow import MlflowClient

    n_trials, name = 6, "scaleout"
    study_file = _study_file(tmp_path, name, cnn_only=False)
    environment = {**os.environ, "MLFLOW_TRACKING_URI": cluster["tracking_uri"], "CAMP_CACHE": str(tmp_path / "cache"),
                   "CAMP_HEARTBEAT_INTERVAL": "1", "CAMP_HEARTBEAT_GRACE": "6", "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("CAMP_STORAGE", None)
    command = [sys.executable, "-m", "camp.cli", "sweep", str(study_file), "--data", str(synthetic_data),
               "--storage", cluster["optuna_url"], "--n-trials", str(n_trials)]
    logs = {key: open(tmp_path / f"{key}.log", "w+") for key in ("a", "b")}
    machines = {}
    try:
        machines["a"] = subprocess.Popen(command + ["--workers", "2"], cwd=tmp_path, env=environment,
                                         stdout=logs["a"], stderr=subprocess.STDOUT)
        storage = optuna.storages.RDBStorage(cluster["optuna_url"])
        _wait_for(lambda: name in optuna.get_all_study_names(storage), 120, "machine A to create the study")
        machines["b"] = subprocess.Popen(command + ["--workers", "1"], cwd=tmp_path, env=environment,
                                         stdout=logs["b"], stderr=subprocess.STDOUT)
        worker = _wait_for(lambda: _worker_processes(machines["a"].pid), 60, "machine A's second worker process")[0]
        owner = f"{socket.gethostname()}:{worker}"

        def running_trial_of_worker():
            return next((t for t in _trials(storage, name) if t.state == STATE.RUNNING
                         and t.user_attrs.get("worker") == owner and t.user_attrs.get("mlflow_run_id")), None)

        victim = _wait_for(running_trial_of_worker, 180, "a trial running in machine A's second worker")
        os.kill(worker, signal.SIGKILL)
        for machine in machines.values():
            machine.wait(timeout=360)
    finally:
        for machine in machines.values():
            if machine.poll() is None:
                machine.kill()
                machine.wait()
    output = {}
    for key, handle in logs.items():
        handle.seek(0)
        output[key] = handle.read()
        handle.close()
    for key, machine in machines.items():
        assert machine.returncode == 0, f"machine {key} exited {machine.returncode}:\n{output[key][-4000:]}"
    assert "was killed by SIGKILL" in output["a"]

    # Optuna: the asked number of complete trials, unique numbers, the killed trial failed and re-queued
    trials = _trials(storage, name)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert sum(t.state == STATE.COMPLETE for t in trials) >= n_trials
    assert not [t.number for t in trials if t.state == STATE.RUNNING]
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == STATE.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].params == killed.params

    # MLflow: exactly one run per started trial, each with a final status; the killed one KILLED
    import mlflow

    mlflow.set_tracking_uri(cluster["tracking_uri"])
    client = MlflowClient(cluster["tracking_uri"])
    runs = mlflow.search_runs(experiment_names=["camp"], output_format="list", max_results=1000)
    assert not [run.info.run_id for run in runs if run.info.status == "RUNNING"], "runs left RUNNING"
    trial_runs = {run.info.run_id: run for run in runs if "optuna.trial" in run.data.tags}
    started = [t for t in trials if t.state in (STATE.COMPLETE, STATE.PRUNED, STATE.FAIL)]
    run_ids = [t.user_attrs["mlflow_run_id"] for t in started]
    assert len(run_ids) == len(set(run_ids))
    assert sorted(run_ids) == sorted(trial_runs)
    for trial in started:
        run = trial_runs[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["optuna.trial"] == str(trial.number)
        assert run.info.status == "FINISHED" if trial.state == STATE.COMPLETE else run.info.status in ("KILLED", "FAILED")
        assert run.data.tags["optuna.state"] == trial.state.name
    assert "camp.killed" in trial_runs[killed.user_attrs["mlflow_run_id"]].data.tags

    # the champion: one registered version per best run, @champion moved once per improvement
    versions = sorted(client.search_model_versions("name='camp-classifier'"), key=lambda v: int(v.version))
    assert versions, "nothing registered"
    assert len({v.run_id for v in versions}) == len(versions), "the same trial was registered twice"
    promoted = [v for v in versions if "camp.promoted_at" in v.tags]
    values = [float(v.tags["camp.value"]) for v in promoted]
    assert promoted and values == sorted(values) and len(set(values)) == len(values)
    champion = client.get_model_version_by_alias("camp-classifier", "champion")
    assert champion.version == promoted[-1].version
    best = optuna.load_study(study_name=name, storage=storage).best_trial
    assert champion.run_id == best.user_attrs["mlflow_run_id"]

    # the password: nowhere in the MLflow database, its artifacts, the servers' logs or the printed output
    password = cluster["password"]
    dump = subprocess.run([str(cluster["pg_bin"] / "pg_dump"), "-h", "127.0.0.1", "-p", str(cluster["pg_port"]),
                           "-U", "camp", "mlflow"], env={**os.environ, "PGPASSWORD": password},
                          capture_output=True, text=True, timeout=120)
    assert dump.returncode == 0, dump.stderr
    assert "optuna.storage" in dump.stdout and "camp:***@" in dump.stdout  # the masked URL is there
    assert password not in dump.stdout
    for path in (cluster["dir"] / "artifacts").rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    for log in (cluster["dir"] / "mlflow.log", Path(os.path.realpath(cluster["dir"] / "pg")) / "server.log"):
        assert password not in log.read_text(errors="replace"), log
    for key, text in output.items():
        assert password not in text, f"machine {key} printed the password"
        assert "camp:***@" in text
    assert password not in cluster["up_output"]


def _journal_trials(journal: Path, name: str):
    if not journal.exists():
        return []
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return _trials(storage, name)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_ctrl_c_fails_the_running_trial_in_both_stores_and_a_rerun_resumes(isolated, synthetic_data):
    import mlflow

    name = "interrupt"
    study_file = _study_file(isolated, name, max_epochs=25, patience=25)  # long enough to be interrupted
    journal = isolated / "optuna.journal"
    command = [sys.executable, "-m", "camp.cli", "sweep", str(study_file), "--data", str(synthetic_data),
               "--storage", str(journal), "--n-trials", "2", "--no-register"]
    sweep = subprocess.Popen(command, cwd=isolated, env=dict(os.environ), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        victim = _wait_for(lambda: next((t for t in _journal_trials(journal, name)
                                         if t.state == STATE.RUNNING and t.intermediate_values), None),
                           180, "a trial to finish its first epoch")
        sweep.send_signal(signal.SIGINT)
        out, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    assert sweep.returncode == 130, err[-3000:]
    assert "sweep interrupted" in err and "Rerun the same command" in err
    trials = _journal_trials(journal, name)
    assert not [t.number for t in trials if t.state == STATE.RUNNING]
    interrupted = next(t for t in trials if t.number == victim.number)
    assert interrupted.state == STATE.FAIL
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run = mlflow.get_run(interrupted.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["optuna.state"] == "FAIL"
    parent = mlflow.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED" and parent.data.tags["camp.status"] == "interrupted"

    rerun = subprocess.run(command, cwd=isolated, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{len(trials)} trial(s) so far" in rerun.stdout  # the same study, resumed
    trials = _journal_trials(journal, name)
    assert sum(t.state == STATE.COMPLETE for t in trials) == 2
    assert next(t for t in trials if t.number == victim.number).state == STATE.FAIL
    runs = mlflow.search_runs(experiment_names=["camp"], output_format="list", max_results=100)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]


def _readme_scaling_out_blocks() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Scaling out"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [[line.strip() for line in re.sub(r"\\\n\s*", "", block).splitlines()
             if line.strip() and not line.strip().startswith("#")] for block in blocks]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_readme_database_host_commands_as_written(tmp_path):
    """The README's database-host block, run as written (PASSWORD filled in) against Debian's own
    PostgreSQL service, then its `mlflow server` line (DBHOST, the artifact folder and the port filled
    in) answering and tracking a run. Leaves the service as it found it; skips on a machine that
    already has the role or the databases (a developer's real ones) or no Debian service."""
    (db_host,) = [block for block in _readme_scaling_out_blocks() if any("createdb" in line for line in block)]
    (server,) = [line for block in _readme_scaling_out_blocks() for line in block if line.startswith("mlflow server")]
    if not shutil.which("pg_lsclusters") or not (shutil.which("service") or shutil.which("systemctl")):
        pytest.skip("needs Debian's PostgreSQL service (postgresql-common) installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if not shutil.which("sudo"):
        if os.geteuid() != 0:
            pytest.skip("needs root or sudo")
        (bin_dir / "sudo").write_text('#!/bin/sh\n[ "$1" = -u ] && { u="$2"; shift 2; exec runuser -u "$u" -- "$@"; }\n'
                                      'exec "$@"\n')  # root without sudo: `sudo -u USER cmd` is runuser
        (bin_dir / "sudo").chmod(0o755)
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    was_running = not _port_free(5432)

    def sh(script: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["bash", "-c", script], cwd="/tmp", env=environment, capture_output=True,
                                text=True, timeout=120)
        assert not check or result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        return result

    password = secrets.token_urlsafe(12)
    created, server_process = False, None
    try:
        sh(db_host[0])  # apt-get install (a no-op when installed, as in CI)
        sh(db_host[1])  # start the service
        _wait_for(lambda: not _port_free(5432), 60, "PostgreSQL on 5432")
        existing = sh("sudo -u postgres psql -tAc \"SELECT count(*) FROM pg_roles WHERE rolname='camp'\" && "
                      "sudo -u postgres psql -tAc \"SELECT count(*) FROM pg_database WHERE datname IN ('optuna','mlflow')\"")
        if existing.stdout.split() != ["0", "0"]:
            pytest.skip("this machine's PostgreSQL already has the role camp or databases optuna/mlflow")
        created = True
        for line in db_host[2:]:
            sh(line.replace("'PASSWORD'", f"'{password}'"))  # the placeholder, not the SQL keyword
        import psycopg

        for database in ("optuna", "mlflow"):
            with psycopg.connect(f"postgresql://camp:{password}@127.0.0.1:5432/{database}") as connection:
                assert connection.execute("SELECT current_user").fetchone() == ("camp",)
        port = _free_port()  # the README's 5000 may be taken by `make ui`
        words = (server.replace("PASSWORD", password).replace("DBHOST", "127.0.0.1")
                 .replace("/srv/camp/artifacts", str(tmp_path / "artifacts")).replace("--port 5000", f"--port {port}"))
        words = words.split()
        words[0] = str(Path(sys.executable).parent / "mlflow")
        server_process = subprocess.Popen(words, env={**environment, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import urllib.request

        def answers():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3).status == 200
            except OSError:
                assert server_process.poll() is None, "mlflow server exited"
                return False

        _wait_for(answers, 120, "the README's mlflow server")
        from mlflow import MlflowClient

        client = MlflowClient(f"http://127.0.0.1:{port}")
        run = client.create_run(client.create_experiment("readme"))
        client.log_text(run.info.run_id, "through the server", "note.txt")
        client.set_terminated(run.info.run_id)
        assert list((tmp_path / "artifacts").rglob("note.txt"))
    finally:
        if server_process is not None and server_process.poll() is None:
            os.killpg(server_process.pid, signal.SIGTERM)
            try:
                server_process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server_process.pid, signal.SIGKILL)
                server_process.wait()
        if created:
            sh("sudo -u postgres dropdb --if-exists optuna; sudo -u postgres dropdb --if-exists mlflow; "
               "sudo -u postgres psql -c 'DROP ROLE IF EXISTS camp'", check=False)
        if not was_running:
            sh("sudo service postgresql stop", check=False)


# ---- fast checks of the pieces (no PostgreSQL, no training) ----

def test_passwords_are_masked_in_urls_and_messages():
    from camp.tracking import mask_secrets, mask_url

    assert mask_url("postgresql+psycopg://camp:s3cr/et@db:5432/optuna") == "postgresql+psycopg://camp:***@db:5432/optuna"
    assert mask_url("postgresql://camp@db/optuna") == "postgresql://camp@db/optuna"
    assert mask_url("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert mask_secrets("cannot open postgresql://u:pw@h/d: refused") == "cannot open postgresql://u:***@h/d: refused"


def test_heartbeat_settings_come_from_the_environment(monkeypatch):
    from camp.storage import heartbeat_settings

    monkeypatch.delenv("CAMP_HEARTBEAT_INTERVAL", raising=False)
    monkeypatch.delenv("CAMP_HEARTBEAT_GRACE", raising=False)
    assert heartbeat_settings() == (30, 120)
    monkeypatch.setenv("CAMP_HEARTBEAT_INTERVAL", "2")
    monkeypatch.setenv("CAMP_HEARTBEAT_GRACE", "5")
    assert heartbeat_settings() == (2, 5)
    monkeypatch.setenv("CAMP_HEARTBEAT_GRACE", "2")
    with pytest.raises(ValueError, match="CAMP_HEARTBEAT_GRACE"):
        heartbeat_settings()


def _running_trial_with_run(study, owner: str):
    """A RUNNING trial owned by `owner` with a RUNNING MLflow run, as a worker leaves it when it dies."""
    from camp import tracking

    tracking.setup()
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name("camp").experiment_id
    run = client.create_run(experiment, tags={"optuna.trial": "0"}, run_name="trial-0")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("worker", owner)
    trial.set_user_attr("mlflow_run_id", run.info.run_id)
    return trial, run.info.run_id, client


def _assert_failed_killed_and_requeued(study, trial, run_id, client):
    trials = study.get_trials(deepcopy=False)
    assert trials[trial.number].state == STATE.FAIL
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "FAIL" and "camp.killed" in run.data.tags
    queued = [t for t in trials if t.state == STATE.WAITING]
    assert len(queued) == 1 and queued[0].params == trials[trial.number].params
    assert queued[0].system_attrs["failed_trial"] == trial.number
    assert "mlflow_run_id" not in queued[0].user_attrs  # the retry gets its own run


def test_a_dead_local_workers_trial_is_failed_killed_and_requeued_on_the_journal(isolated):
    from camp.storage import make_storage, tidy_study

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    study = optuna.create_study(study_name="s", storage=make_storage(str(isolated / "optuna.journal")))
    trial, run_id, client = _running_trial_with_run(study, f"{socket.gethostname()}:{dead.pid}")
    alive, _, _ = _running_trial_with_run(study, f"{socket.gethostname()}:{os.getpid()}")
    tidy_study(study)
    _assert_failed_killed_and_requeued(study, trial, run_id, client)
    assert study.get_trials(deepcopy=False)[alive.number].state == STATE.RUNNING  # a live worker keeps its trial


def test_optunas_heartbeat_fails_a_silent_trial_kills_its_run_and_requeues_it(isolated, monkeypatch):
    from camp.storage import make_storage

    monkeypatch.setenv("CAMP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("CAMP_HEARTBEAT_GRACE", "2")
    storage = make_storage(f"sqlite:///{isolated}/optuna.db")
    assert storage.get_heartbeat_interval() == 1
    assert type(storage.get_heartbeat_stale_trial_callback()).__name__ == "StaleTrialCallback"
    study = optuna.create_study(study_name="s", storage=storage)
    trial, run_id, client = _running_trial_with_run(study, "another-machine:4242")
    storage.record_heartbeat(trial._trial_id)
    time.sleep(3.5)  # longer than the grace period
    optuna.storages.fail_stale_trials(study)  # what every worker runs before it starts a trial
    _assert_failed_killed_and_requeued(study, trial, run_id, client)
