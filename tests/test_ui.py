"""`make ui` after a smoke sweep: the MLflow UI lists the sweep's parent run and its nested trial runs
and shows `camp-classifier@champion` (checked through the UI server's REST API and in the pages
headless chromium renders; screenshots are kept in test-artifacts/); and `make dashboard` serves the
study from its journal file."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import pytest

from tests.servers import ARTIFACTS, HOST, clean_env, free_port, http, make_command, serving, stop

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--virtual-time-budget=15000",
                  "--window-size=1400,900", "--hide-scrollbars"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("make") is None, reason="needs make")]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def ui(current_smoke_store):
    """`make ui` on a free port of 127.0.0.1 over the sweep's store; stopped by PID after the module."""

    port = free_port()
    with serving(make_command("ui", PORT=str(port)), f"http://{HOST}:{port}/health",
                 current_smoke_store / "ui.log", env=clean_env()):
        yield f"http://{HOST}:{port}"


def sweep_runs(ui: str) -> tuple[str, dict, list[dict]]:
    """Through the UI server's REST API: the experiment id, the sweep's parent run, its trial runs."""
    status, answer = http(f"{ui}/api/2.0/mlflow/experiments/get-by-name?experiment_name=camp")
    assert status == 200, answer
    experiment_id = answer["experiment"]["experiment_id"]
    status, answer = http(f"{ui}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id], "max_results": 100})
    assert status == 200, answer
    runs = answer["runs"]

    def tags(run):
        return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}

    parents = [run for run in runs if tags(run).get("camp.role") == "sweep"]
    assert len(parents) == 1, [run["info"]["run_name"] for run in runs]
    parent = parents[0]
    children = [run for run in runs if tags(run).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    return experiment_id, parent, children


def test_mlflow_ui_lists_the_sweep_and_the_champion(ui):
    experiment_id, parent, children = sweep_runs(ui)
    assert parent["info"]["run_name"] == "sweep-smoke"
    assert sorted(run["info"]["run_name"] for run in children) == ["trial-0", "trial-1", "trial-2"]
    assert all(run["info"]["status"] == "FINISHED" for run in [parent, *children])
    status, answer = http(f"{ui}/api/2.0/mlflow/registered-models/get?name=camp-classifier")
    assert status == 200, answer
    aliases = {alias["alias"]: alias["version"] for alias in answer["registered_model"].get("aliases", [])}
    assert "champion" in aliases
    status, version = http(f"{ui}/api/2.0/mlflow/model-versions/get?name=camp-classifier&version={aliases['champion']}")
    assert status == 200 and version["model_version"]["run_id"] in {run["info"]["run_id"] for run in children}
    status, page = http(f"{ui}/")
    assert status == 200 and "<html" in str(page).lower()


def render(url: str, screenshot: Path, profile: Path) -> str:
    """Load `url` in headless chromium; save a screenshot; return the rendered DOM."""
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot}", "--dump-dom", url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               start_new_session=True, text=True)
    try:
        dom, errors = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        dom, errors = "", "chromium did not finish within 120 s"
    finally:
        stop(process, grace_s=5)
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000, f"no screenshot of {url}: {errors[-2000:]}"
    return dom


def test_mlflow_ui_renders_in_headless_chromium(ui, capsys):
    if chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run does it)")
    experiment_id, parent, children = sweep_runs(ui)
    parent_id = parent["info"]["run_id"]
    # the parent run logs the study's data (MLflow dataset inputs): the run list's Dataset column names it
    dataset_names = [entry["dataset"]["name"] for entry in parent.get("inputs", {}).get("dataset_inputs", [])]
    assert dataset_names, "the sweep's parent run logged no dataset inputs"
    dataset_name = dataset_names[0]
    ARTIFACTS.mkdir(exist_ok=True)
    pages = {
        # the experiment's run list: the sweep's parent run (its trials nest under it), with its datasets
        "mlflow-ui-runs.png": (f"#/experiments/{experiment_id}/runs", ["sweep-smoke", dataset_name]),
        # the parent run's page: "Child runs" lists every trial run
        "mlflow-ui-sweep-run.png": (f"#/experiments/{experiment_id}/runs/{parent_id}",
                                    ["sweep-smoke", "trial-0", "trial-1", "trial-2"]),
        # the registered model: its versions and the @champion alias
        "mlflow-ui-model.png": ("#/models/camp-classifier", ["camp-classifier", "champion"]),
        # the champion version: its description (what it is, validation and test macro-F1) and tags
        "mlflow-ui-version.png": ("#/models/camp-classifier/versions/1", ["data fingerprint", "test macro-F1",
                                                                         "camp.promotion"]),
    }
    saved = []
    with tempfile.TemporaryDirectory() as profile:
        for name, (route, wanted) in pages.items():
            dom = render(f"{ui}/{route}", ARTIFACTS / name, Path(profile))
            missing = [text for text in wanted if text not in dom]
            assert not missing, f"{route}: {missing} not in the rendered page (see {ARTIFACTS / name})"
            saved.append(ARTIFACTS / name)
    with capsys.disabled():
        print("\nMLflow UI screenshots: " + ", ".join(str(path) for path in saved))


def test_make_dashboard_serves_the_study_journal(current_smoke_store, capsys):

    port = free_port()
    journal = current_smoke_store / "optuna.journal"
    url = f"http://{HOST}:{port}"
    with serving(make_command("dashboard", STORAGE=str(journal), DASHBOARD_PORT=str(port)), f"{url}/api/studies",
                 current_smoke_store / "dashboard.log", env=clean_env(), deadline_s=120):
        status, answer = http(f"{url}/api/studies")
        assert status == 200
        studies = {study["study_name"]: study["study_id"] for study in answer["study_summaries"]}
        assert "smoke" in studies
        status, detail = http(f"{url}/api/studies/{studies['smoke']}?after=0")
        assert status == 200 and len(detail["trials"]) == 3
        status, page = http(f"{url}/dashboard")
        assert status == 200 and "<html" in str(page).lower()
        if chromium() is not None:
            with tempfile.TemporaryDirectory() as profile:
                ARTIFACTS.mkdir(exist_ok=True)
                screenshot = ARTIFACTS / "optuna-dashboard.png"
                route = urllib.parse.quote(f"dashboard/studies/{studies['smoke']}")
                render(f"{url}/{route}", screenshot, Path(profile))
            with capsys.disabled():
                print(f"\noptuna-dashboard screenshot: {screenshot}")
