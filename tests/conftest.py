"""Shared fixtures: synthetic datasets, an isolated MLflow store and cache per test, the awkward files of
`tests/fixtures/bad_files.py` written once per module, and `camp data summary --json` in process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures import bad_files
from tests.synthetic import make_image_folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "clothing-small"


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A small image-folder dataset: 5 camp5 source classes, train/validation/test."""
    return make_image_folder(tmp_path_factory.mktemp("synthetic"), splits=("train", "validation", "test"))


@pytest.fixture()
def isolated(tmp_path, monkeypatch) -> Path:
    """Run in a temp dir with its own MLflow store (SQLite) and cache; returns the dir."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    monkeypatch.setenv("CAMP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "mlruns").mkdir()
    return tmp_path


@pytest.fixture()
def no_memory_cache(monkeypatch):
    """Decoded images (the 8000x8000 one is 48 MB at 1/2) are dropped from memory after the test."""
    from camp import caches

    monkeypatch.setattr(caches, "_MEMORY", {})


@pytest.fixture(scope="module")
def case_files(tmp_path_factory) -> dict[str, Path]:
    return bad_files.write(tmp_path_factory.mktemp("bad_files"))


def data_summary_stdout(capsys, root, isolated, *extra) -> str:
    """What `camp data summary --json` on `root` prints (output folder under `isolated`)."""
    from camp.cli import main

    capsys.readouterr()
    assert main(["data", "summary", "--json", "--data", str(root), "--out", str(isolated / "report"), *extra]) == 0
    return capsys.readouterr().out


@pytest.fixture()
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/datasets/clothing-small is not present")
    return SHARED_DATA


def use_store(patch: pytest.MonkeyPatch, directory: Path) -> None:
    """Point camp at `directory`'s MLflow store and cache, and run from it (as `isolated` does)."""
    patch.chdir(directory)
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{directory}/mlruns/mlflow.db")
    patch.setenv("CAMP_CACHE", str(directory / "cache"))


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory, synthetic_data) -> Path:
    """One smoke sweep (sweeps/smoke.yaml, 3 trials on synthetic images) with its own MLflow store and
    Optuna journal, registering @champion; shared by the modules that only read it (serving, UI)."""
    from camp import cli

    directory = tmp_path_factory.mktemp("smoke-store")
    (directory / "mlruns").mkdir()
    smoke = Path(__file__).resolve().parent.parent / "sweeps" / "smoke.yaml"
    with pytest.MonkeyPatch.context() as patch:
        use_store(patch, directory)
        assert cli.main(["sweep", str(smoke), "--data", str(synthetic_data), "--storage",
                         str(directory / "optuna.journal")]) == 0
    return directory


@pytest.fixture(scope="module")
def current_smoke_store(smoke_store) -> Path:
    """The shared smoke sweep's store (registers @champion), made current for one test module."""
    with pytest.MonkeyPatch.context() as patch:
        use_store(patch, smoke_store)
        yield smoke_store


def run_concurrently(write, threads: int = 4, repeats: int = 15) -> list[Exception]:
    """Call `write()` `repeats` times in each of `threads` threads at once; the exceptions raised."""
    import threading

    errors: list[Exception] = []

    def worker():
        try:
            for _ in range(repeats):
                write()
        except Exception as error:  # noqa: BLE001 - returned to the test, which asserts on it
            errors.append(error)

    started = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return errors
