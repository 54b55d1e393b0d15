"""The sweep end to end on synthetic data: nested runs, registry, served predictions, resume, workers;
a sweep killed with SIGKILL (mid-trial, or while logging the model) resumes without losing a finished trial."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from camp import cli
from tests.fixtures import bad_files

REPO = Path(__file__).resolve().parent.parent
SMOKE = str(REPO / "sweeps" / "smoke.yaml")


def _runs(experiment="camp"):
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return mlflow.search_runs(experiment_names=[experiment], output_format="list", max_results=1000)


def _study(journal: Path, name="smoke"):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture()
def smoke_sweep(isolated, synthetic_data):
    journal = isolated / "optuna.journal"
    code = cli.main(["sweep", SMOKE, "--data", str(synthetic_data), "--storage", str(journal)])
    assert code == 0
    return isolated, journal


def test_smoke_sweep_tracks_every_trial_and_registers_a_champion(smoke_sweep, synthetic_data):
    import mlflow
    from mlflow import MlflowClient

    directory, journal = smoke_sweep
    runs = _runs()
    parents = [run for run in runs if run.data.tags.get("camp.role") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3
    # the run the UI lists (its trials nest under it) shows the study's data in its Dataset column
    parent_inputs = {entry.tags[0].value: entry.dataset for entry in parent.inputs.dataset_inputs}
    assert sorted(parent_inputs) == ["test", "training", "validation"]
    assert {d.digest for d in parent_inputs.values()} == {children[0].data.tags["camp.data_fingerprint"][:20]}
    study = _study(journal)
    assert len(study.trials) == 3
    for trial in study.trials:
        run = next(run for run in children if run.info.run_id == trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna.trial"] == str(trial.number)
        assert run.data.tags["optuna.study"] == "smoke"
        assert run.data.tags["optuna.state"] == trial.state.name
        assert "preprocess.mode" in run.data.params and "model.learning_rate" in run.data.params
    client = MlflowClient()
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/optimization_history.png", "study/best_trials.md", "study/summary.json"} <= parent_artifacts
    champion = client.get_model_version_by_alias("camp-classifier", "champion")
    assert champion.tags["camp.run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    assert abs(float(champion.tags["camp.value"]) - study.best_trial.value) < 1e-6
    del mlflow


def test_served_model_in_a_fresh_process_matches_the_trial(smoke_sweep, synthetic_data, tmp_path_factory):
    """Load models:/camp-classifier@champion in a new Python started outside the repository."""
    import mlflow
    from mlflow import MlflowClient

    directory, journal = smoke_sweep
    best_run = _study(journal).best_trial.user_attrs["mlflow_run_id"]
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    recorded = json.loads(Path(MlflowClient().download_artifacts(best_run, "val_predictions.json",
                                                                 str(tmp_path_factory.mktemp("dl")))).read_text())
    paths = [str(synthetic_data / relpath) for relpath in recorded["relpaths"]]
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/camp-classifier@champion')\n"
        "out = model.unwrap_python_model().predict_files(json.loads(sys.argv[1]))\n"
        "print(json.dumps(out[[c for c in out.columns if c.startswith('p_')]].values.tolist()))\n"
    )
    outside = tmp_path_factory.mktemp("outside")
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script, json.dumps(paths)], cwd=outside, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    served = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(served, np.array(recorded["probabilities"]), atol=1e-4)
    assert (served.argmax(axis=1) == np.array(recorded["y_pred"])).all()


def test_camp_predict_prints_one_json_line_per_image(smoke_sweep, synthetic_data, capsys):
    images = sorted((synthetic_data / "test" / "hat").glob("*.jpg"))[:2]
    bad = smoke_sweep[0] / "not-an-image.jpg"
    bad.write_text("hello")
    capsys.readouterr()
    code = cli.main(["predict", *map(str, images), str(bad)])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert code == 1  # one item could not be read
    assert [line["path"] for line in lines] == [*map(str, images), str(bad)]
    assert all(line["label"] in {"cap_and_hat", "outerwear", "tops", "bottoms", "shoes"} for line in lines[:2])
    assert abs(sum(lines[0]["probabilities"].values()) - 1.0) < 1e-3
    assert lines[2]["label"] is None and "not-an-image.jpg" in lines[2]["error"]


def test_a_worse_model_never_takes_the_champion_alias(smoke_sweep, synthetic_data):
    from mlflow import MlflowClient

    from camp import promotion, registry
    from camp.objective import config_for, make_plan
    from camp.run_config import prepare_dataset

    directory, journal = smoke_sweep
    study = _study(journal)
    worst = min((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    args = cli.build_parser().parse_args(["sweep", SMOKE, "--data", str(synthetic_data)])
    plan = make_plan(args)
    config = config_for(optuna.trial.FixedTrial(worst.params), plan)
    _, fingerprint = prepare_dataset(config)
    before = MlflowClient().get_model_version_by_alias("camp-classifier", "champion").version
    info = registry.log_pyfunc_for_run(worst.user_attrs["mlflow_run_id"])
    version, promoted = promotion.register_and_promote(info.model_uri, worst.user_attrs["mlflow_run_id"],
                                                      worst.value - 0.5, config, fingerprint, log=lambda *_: None)
    assert not promoted
    assert MlflowClient().get_model_version_by_alias("camp-classifier", "champion").version == before
    assert int(version.version) > int(before)


WEAK_STUDY = """\
study: {name: weak, metric: val/macro_f1, n_trials: 1}
data: {label_map: camp5}
seed: 3
preprocess: {mode: gray, size: 24, crop_method: none}
model: {conv_blocks: 1, filters: 4, dense_units: 0, max_epochs: 1, min_epochs: 1, patience: 1, learning_rate: 1.0e-6}
"""


def test_a_sweep_whose_best_model_is_worse_leaves_the_champion_where_it_was(smoke_sweep, synthetic_data, capsys):
    """A second study on the same data whose only trial barely learns (1 epoch at lr 1e-6) registers a
    version, but @champion stays, and the sweep says why; the version's tags record the comparison."""
    from mlflow import MlflowClient

    directory, journal = smoke_sweep
    client = MlflowClient()
    before = client.get_model_version_by_alias("camp-classifier", "champion").version
    capsys.readouterr()
    weak = directory / "weak.yaml"
    weak.write_text(WEAK_STUDY)
    assert cli.main(["sweep", str(weak), "--data", str(synthetic_data), "--storage", str(journal)]) == 0
    out = capsys.readouterr().out
    assert client.get_model_version_by_alias("camp-classifier", "champion").version == before
    latest = max(client.search_model_versions("name='camp-classifier'"), key=lambda v: int(v.version))
    assert int(latest.version) > int(before)
    assert latest.tags["camp.promotion"].startswith("does not beat")
    assert "stays on" in out and "does not beat" in out
    assert out.strip().splitlines()[-1].startswith(f"@champion did not move: v{latest.version} does not beat")
    parent = next(run for run in _runs() if run.data.tags.get("camp.role") == "sweep"
                  and run.data.tags.get("optuna.study") == "weak")
    assert parent.data.tags["camp.registered_version"] == str(latest.version)  # the sweep names what it registered
    assert parent.data.tags["camp.promotion"] == latest.tags["camp.promotion"]


def test_a_near_chance_model_is_never_promoted(smoke_sweep, synthetic_data):
    """Registered with chance-level validation predictions, a version is refused by the trivial floors
    before it is compared with the champion."""
    from mlflow import MlflowClient

    from camp import promotion, registry
    from camp.objective import config_for, make_plan
    from camp.run_config import prepare_dataset

    directory, journal = smoke_sweep
    study = _study(journal)
    best = study.best_trial
    plan = make_plan(cli.build_parser().parse_args(["sweep", SMOKE, "--data", str(synthetic_data)]))
    config = config_for(optuna.trial.FixedTrial(best.params), plan)
    _, fingerprint = prepare_dataset(config)
    run_id = best.user_attrs["mlflow_run_id"]
    logged = promotion.run_predictions(run_id)
    rng = np.random.default_rng(5)
    chance = np.eye(len(logged["labels"]))[rng.integers(0, len(logged["labels"]), len(logged["y_true"]))]
    before = MlflowClient().get_model_version_by_alias("camp-classifier", "champion").version
    info = registry.log_pyfunc_for_run(run_id)
    messages = []
    version, promoted = promotion.register_and_promote(info.model_uri, run_id, 0.2, config, fingerprint,
                                                       log=messages.append,
                                                       predictions={**logged, "probabilities": chance.tolist()})
    assert not promoted
    assert MlflowClient().get_model_version_by_alias("camp-classifier", "champion").version == before
    assert "near-trivial" in messages[-1] and "stays on" in messages[-1]
    tags = MlflowClient().get_model_version("camp-classifier", version.version).tags
    assert "near-trivial" in tags["camp.promotion"] and "largest label" in json.loads(tags["camp.floor_gain"])


def test_a_stopped_study_resumes_to_the_asked_number_of_trials(isolated, synthetic_data):
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", SMOKE, "--data", str(synthetic_data), "--storage", str(journal), "--n-trials", "2",
                     "--no-register"]) == 0
    assert len(_study(journal).trials) == 2
    assert cli.main(["sweep", SMOKE, "--data", str(synthetic_data), "--storage", str(journal), "--no-register"]) == 0
    study = _study(journal)
    assert sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials) == 3
    assert len([run for run in _runs() if run.data.tags.get("camp.role") == "sweep"]) == 2


def test_two_workers_share_one_journal(isolated, synthetic_data):
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", SMOKE, "--data", str(synthetic_data), "--storage", str(journal), "--n-trials", "4",
                     "--workers", "2", "--no-register"]) == 0
    study = _study(journal)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) >= 4
    trial_runs = [run for run in _runs() if "optuna.trial" in run.data.tags]
    run_ids = [t.user_attrs["mlflow_run_id"] for t in study.trials]
    assert sorted(run.info.run_id for run in trial_runs) == sorted(run_ids)  # exactly one run per trial
    assert {run.data.tags["optuna.trial"] for run in trial_runs} == {str(n) for n in numbers}


def test_bad_search_space_is_rejected_before_any_trial(isolated, synthetic_data, capsys):
    bad = isolated / "bad.yaml"
    bad.write_text("study: {name: bad}\npreprocess:\n  threshold_block: {int: [4, 12], step: 2}\n")
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", str(bad), "--data", str(synthetic_data), "--storage", str(journal)]) == 2
    assert "preprocess.threshold_block" in capsys.readouterr().err
    assert not journal.exists()


def test_same_seed_gives_the_same_trial_parameters(isolated, synthetic_data):
    """Two fresh studies from the same file and seed sample identical parameters."""
    from camp.objective import config_for, make_plan
    from camp.sweep import make_sampler

    args = cli.build_parser().parse_args(["sweep", SMOKE, "--data", str(synthetic_data)])
    plan = make_plan(args)
    sampled = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_sampler(plan.study_file, 0), direction="maximize")
        configs = []
        for _ in range(4):
            trial = study.ask()
            configs.append(config_for(trial, plan))
            study.tell(trial, 0.5)
        sampled.append(configs)
    assert sampled[0] == sampled[1]


@pytest.mark.parametrize("study, message", [
    ("data: {label_map: no-such-map}", "no label map 'no-such-map'"),
    ("data: {label_map: missing.yaml}", "missing.yaml"),
    ("data: {exclude: missing-list.txt}", "data.exclude: no such file"),
    ("seed: -1", r"seed must be an integer in \[0, 2\*\*32\)"),
])
def test_bad_data_settings_are_refused_before_any_trial(isolated, synthetic_data, capsys, study, message):
    bad = isolated / "bad.yaml"
    bad.write_text("study: {name: bad}\n" + study + "\n")
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", str(bad), "--data", str(synthetic_data), "--storage", str(journal)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not journal.exists() and not _runs_or_none()


def test_a_missing_dataset_or_an_unwritable_cache_is_refused_before_any_trial(isolated, synthetic_data, capsys,
                                                                              monkeypatch):
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", SMOKE, "--data", str(isolated / "nowhere"), "--storage", str(journal)]) == 2
    assert "nowhere" in capsys.readouterr().err
    blocker = isolated / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CAMP_CACHE", str(blocker))
    assert cli.main(["sweep", SMOKE, "--data", str(synthetic_data), "--storage", str(journal)]) == 2
    assert f"cache folder {blocker} is not a writable folder" in capsys.readouterr().err
    assert not journal.exists()


def _runs_or_none():
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    experiment = mlflow.get_experiment_by_name("camp")
    return [] if experiment is None else _runs()


def test_resuming_a_study_on_other_data_is_refused_naming_both(isolated, synthetic_data, capsys, tmp_path):
    from tests.synthetic import make_image_folder

    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", SMOKE, "--data", str(synthetic_data), "--storage", str(journal), "--n-trials", "1",
                     "--no-register"]) == 0
    other = make_image_folder(tmp_path / "other", per_class={"train": 8, "validation": 4}, seed=1)
    capsys.readouterr()
    assert cli.main(["sweep", SMOKE, "--data", str(other), "--storage", str(journal), "--no-register"]) == 2
    error = capsys.readouterr().err
    assert str(synthetic_data) in error and str(other) in error and "another study.name" in error
    assert len(_study(journal).trials) == 1  # nothing ran on the other data


def test_a_changed_search_space_on_resume_is_named(isolated, synthetic_data, capsys):
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", SMOKE, "--data", str(synthetic_data), "--storage", str(journal), "--n-trials", "1",
                     "--no-register"]) == 0
    edited = isolated / "smoke.yaml"
    edited.write_text(Path(SMOKE).read_text().replace("dense_units: 16", "dense_units: {choice: [16, 32]}"))
    capsys.readouterr()
    assert cli.main(["sweep", str(edited), "--data", str(synthetic_data), "--storage", str(journal), "--n-trials", "2",
                     "--no-register"]) == 0
    err = capsys.readouterr().err
    assert "the study file changed since its earlier runs" in err and "model.dense_units" in err


def test_a_dataset_whose_train_images_are_all_unreadable_is_refused_before_any_trial(isolated, capsys, tmp_path):
    from tests.synthetic import make_image_folder

    root = make_image_folder(tmp_path / "broken", per_class={"train": 2, "validation": 2}, seed=2)
    for image in (root / "train").glob("*/*.jpg"):
        image.write_text("not a photo")
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", SMOKE, "--data", str(root), "--storage", str(journal)]) == 2
    error = capsys.readouterr().err
    assert "none of its 10 train images can be read" in error and "not a readable image" in error
    assert not journal.exists()


# -- disk: a sweep killed with SIGKILL resumes, losing no finished trial -----------------------------------

def _journal_trials(journal: Path, name: str = "smoke"):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return []


def _sweep_command(root: Path, journal: Path) -> list[str]:
    return [sys.executable, "-m", "camp.cli", "sweep", SMOKE, "--data", str(root), "--storage", str(journal)]


def _finished(trials) -> dict[int, tuple]:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return {t.number: (t.state, t.value, t.params, t.user_attrs.get("mlflow_run_id")) for t in trials if t.state in done}


def _sweep_env() -> dict:
    return {**os.environ, "CAMP_THREADS": "2", "PYTHONUNBUFFERED": "1"}


def _run(command, isolated, timeout=420) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=isolated, env=_sweep_env(), capture_output=True, text=True, timeout=timeout)


def _check_resumed(isolated, journal, before: dict, result) -> None:
    import mlflow
    from mlflow import MlflowClient

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = _journal_trials(journal)
    finished = _finished(after)
    assert len(finished) >= 3  # smoke.yaml's n_trials
    for number, record in before.items():
        assert finished[number] == record, f"finished trial {number} changed after the kill"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    champion = MlflowClient().get_model_version_by_alias("camp-classifier", "champion")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    best = optuna.load_study(study_name="smoke", storage=storage).best_trial
    assert champion.tags["camp.run_id"] == best.user_attrs["mlflow_run_id"]


@pytest.fixture()
def sweep_data(isolated, synthetic_data, no_memory_cache):
    root = isolated / "data"
    shutil.copytree(synthetic_data, root)
    where = bad_files.plant(root, names=["zero_byte", "text_as_jpg", "png_alpha", "non_ascii_name"])
    return root, where


@pytest.mark.slow
def test_sweep_killed_mid_trial_resumes_without_losing_a_finished_trial(isolated, sweep_data):
    import mlflow

    root, where = sweep_data
    journal = isolated / "optuna.journal"
    process = subprocess.Popen(_sweep_command(root, journal), cwd=isolated, env=_sweep_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, killed_during = time.time() + 300, None
    try:
        while time.time() < deadline and process.poll() is None:
            trials = _journal_trials(journal) if journal.exists() else []
            if _finished(trials) and any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
                os.kill(process.pid, signal.SIGKILL)  # mid-trial: one finished, the next one running
                killed_during = max(t.number for t in trials)
                break
            time.sleep(0.3)
    finally:
        if process.poll() is None and killed_during is None:
            process.kill()
        process.wait(timeout=60)
    assert killed_during is not None, "the sweep never had a finished and a running trial at once"
    before = _finished(_journal_trials(journal))
    assert before
    # the next run starts on the same stores, resumes the study, and loses nothing
    _check_resumed(isolated, journal, before, _run(_sweep_command(root, journal), isolated))
    # trials that ran log the unreadable files they skipped, like `camp train`
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run_id = next(iter(before.values()))[3]
    assert sorted(mlflow.artifacts.load_dict(f"runs:/{run_id}/skipped_images.json")) == where.skipped


DIE_WHILE_LOGGING_THE_MODEL = """
import os, signal, sys
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

real = LocalArtifactRepository.log_artifacts

def log_artifacts(self, local_dir, artifact_path=None):
    if os.path.exists(os.path.join(local_dir, "MLmodel")):  # the registered model's files: half, then SIGKILL
        names = sorted(os.listdir(local_dir))
        for name in names[: len(names) // 2]:
            path = os.path.join(local_dir, name)
            if os.path.isfile(path):
                self.log_artifact(path, artifact_path)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, local_dir, artifact_path)

LocalArtifactRepository.log_artifacts = log_artifacts
from camp.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sweep_killed_while_logging_the_model_resumes_and_registers(isolated, sweep_data):
    root, _ = sweep_data
    journal = isolated / "optuna.journal"
    dying = _run([sys.executable, "-c", DIE_WHILE_LOGGING_THE_MODEL, *_sweep_command(root, journal)[3:]], isolated)
    assert dying.returncode == -signal.SIGKILL, dying.stderr[-3000:]
    before = _finished(_journal_trials(journal))
    assert len(before) == 3  # every trial finished; the kill came while registering the best one
    _check_resumed(isolated, journal, before, _run(_sweep_command(root, journal), isolated))


def _sweep_runs():
    return [run for run in _runs() if run.data.tags.get("camp.role") == "sweep"]


def test_a_rerun_of_a_finished_sweep_adds_no_run_and_repairs_a_stale_parent(smoke_sweep, synthetic_data, capsys):
    """Rerunning a finished sweep runs nothing and logs no empty `sweep-*` run; a `sweep-smoke` run left
    RUNNING by a main process that is gone (a crash, a full store) is ended KILLED by it."""
    import socket

    from mlflow import MlflowClient

    directory, journal = smoke_sweep
    client = MlflowClient()
    experiment = _sweep_runs()[0].info.experiment_id
    stale = client.create_run(experiment, run_name="sweep-smoke", tags={
        "camp.role": "sweep", "optuna.study": "smoke", "camp.worker": f"{socket.gethostname()}:999999999"})
    before = len(_sweep_runs())
    capsys.readouterr()
    assert cli.main(["sweep", SMOKE, "--data", str(synthetic_data), "--storage", str(journal)]) == 0
    out = capsys.readouterr().out
    assert "nothing to run" in out and "ended 1 sweep-smoke run(s)" in out
    assert len(_sweep_runs()) == before
    ended = client.get_run(stale.info.run_id)
    assert ended.info.status == "KILLED" and "gone" in ended.data.tags["camp.status"]


def test_more_workers_than_trials_left_start_only_as_many(isolated, synthetic_data, capsys):
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", SMOKE, "--data", str(synthetic_data), "--storage", str(journal),
                     "--workers", "3", "--n-trials", "1"]) == 0
    assert "starting 1 worker(s), not 3" in capsys.readouterr().out
    assert len(_study(journal).trials) == 1


def test_a_sweep_stopped_by_failed_trials_exits_non_zero(isolated, synthetic_data, monkeypatch, capsys):
    from camp import objective

    def broken(*args, **kwargs):
        raise RuntimeError("out of luck")

    monkeypatch.setattr(objective, "train", broken)
    study = isolated / "failing.yaml"
    study.write_text(Path(SMOKE).read_text().replace("n_trials: 3", "n_trials: 4\n  max_failures: 2"))
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", str(study), "--data", str(synthetic_data), "--storage", str(journal)]) == 1
    assert "stopped at 0/4 finished trials after 2 failed" in capsys.readouterr().err
