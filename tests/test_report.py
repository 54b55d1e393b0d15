"""camp report and camp clean: statistics, and the report end to end on a smoke sweep (rendered in
headless Chromium, numbers checked with sklearn)."""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from camp import cli
from camp.report_modes import verdicts

REPO = Path(__file__).resolve().parent.parent
SMOKE = str(REPO / "sweeps" / "smoke.yaml")
BASELINE = str(REPO / "sweeps" / "baseline.yaml")
LABELS = ["cap_and_hat", "outerwear", "tops", "bottoms", "shoes"]
SECTIONS = ["1. Labels and counts per split", "2. Preprocessing", "3. Colour vs gray vs binary",
            "4. Per-label accuracy", "5. How the sweep raised accuracy", "6. Error analysis"]


# statistics ---------------------------------------------------------------------------------------

def test_a_verdict_only_when_the_intervals_do_not_overlap():
    lines = verdicts({"color": (0.80, 0.75, 0.85), "gray": (0.78, 0.72, 0.83), "binary": (0.50, 0.44, 0.56)}, True)
    assert lines[0].startswith("color vs gray: no verdict")
    assert lines[1].startswith("**color beats binary**") and lines[2].startswith("**gray beats binary**")
    assert verdicts({"a": (0.2, 0.1, 0.3), "b": (0.5, 0.4, 0.6)}, maximize=False)[0].startswith("**a beats b**")


# the report end to end ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reported(tmp_path_factory, synthetic_data):
    """Smoke sweep; a report with no baseline; baseline; camp clean; the champion re-trained without the
    suspects; then the full report. Returns (directory, report folder, {step: stderr})."""
    directory = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{directory}/mlruns/mlflow.db")
        patch.setenv("CAMP_CACHE", str(directory / "cache"))
        journal, out, data = str(directory / "optuna.journal"), directory / "reports" / "smoke", str(synthetic_data)
        common = ["--storage", journal, "--bootstrap", "200"]
        assert cli.main(["sweep", SMOKE, "--data", data, "--storage", journal]) == 0
        first = directory / "first"
        assert cli.main(["report", *common, "--out", str(first), "--folds", "0", "--no-log", "--splits", "test"]) == 0
        assert cli.main(["train", BASELINE, "--data", data]) == 0
        assert cli.main(["clean", "--out", "sweeps/excluded.txt", "--oof-epochs", "1"]) == 0
        assert cli.main(["train", str(first / "champion_with_exclusions.yaml")]) == 0
        assert cli.main(["report", *common, "--oof-epochs", "1"]) == 0
        yield directory, out, first


@pytest.mark.slow
def test_report_without_a_baseline_says_how_to_make_one(reported):
    directory, out, first = reported
    text = (first / "report.md").read_text()
    assert "**No recipe baseline run**" in text and "camp train sweeps/baseline.yaml --data " in text
    assert "per-label-test-baseline" not in (first / "report.html").read_text()
    assert "Skipped (--folds below 2)" in text


@pytest.mark.slow
def test_report_files_and_artifacts_of_the_models_run(reported):
    import mlflow
    from mlflow import MlflowClient

    directory, out, _ = reported
    for name in ("report.html", "report.md", "report.json", "label_counts.png", "preprocessing.png", "modes.png",
                 "confusion_test.png", "confusion_test_baseline.png", "optimization_history.png",
                 "predictions_validation.csv", "predictions_test.csv", "label_issues.csv",
                 "oof_camp-classifier_v1_k3_e1.json"):
        assert (out / name).is_file(), name
    numbers = json.loads((out / "report.json").read_text())
    assert numbers["counts"]["train"] == dict.fromkeys(LABELS, 16)
    assert set(numbers["per_label"]["test"]) == {"champion", "baseline"}
    assert numbers["label_issues"]["pool"] == 110 and numbers["label_issues"]["folds"] == 3
    effect = numbers["exclusion_effect"]
    assert effect["list"] == "sweeps/excluded.txt" and effect["champion_is"] == "without list"
    assert set(effect["metrics"]) >= {"validation/macro F1", "test/accuracy", "test/recall shoes"}
    mlflow.set_tracking_uri(f"sqlite:///{directory}/mlruns/mlflow.db")
    client = MlflowClient()
    version = client.get_model_version_by_alias("camp-classifier", "champion")
    logged = {artifact.path for artifact in client.list_artifacts(version.tags["camp.run_id"], "report")}
    assert {"report/report.html", "report/report.md", "report/predictions_test.csv"} <= logged
    assert {a.path for a in client.list_artifacts(version.tags["camp.run_id"], "label_noise")} == {
        "label_noise/oof_camp-classifier_v1_k3_e1.json"}


@pytest.mark.slow
def test_camp_clean_wrote_a_reviewable_list_of_train_images(reported):
    directory, out, _ = reported
    lines = (directory / "sweeps" / "excluded.txt").read_text().splitlines()
    entries = [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]
    suspects = json.loads((out / "report.json").read_text())["label_issues"]["relpaths"]
    assert entries == [path for path in suspects if path.startswith("train/")]
    assert all((directory / "sweeps" / "excluded.txt").exists() and "suggested" in line for line in lines[4:])


class _Tables(html.parser.HTMLParser):
    """Rows of every <table id=...>, as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.row = {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self.current = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self.current is not None:
            self.row = []
            self.current.append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.row.append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self.current, self.row = None, None

    def handle_data(self, data):
        if self.row:
            self.row[-1] += data


@pytest.mark.slow
def test_per_label_table_matches_scikit_learn_on_the_models_predictions(reported, synthetic_data):
    """Predict the splits again with the registered model, recompute with sklearn, compare to the HTML."""
    import mlflow
    from sklearn.metrics import classification_report

    directory, out, _ = reported
    mlflow.set_tracking_uri(f"sqlite:///{directory}/mlruns/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/camp-classifier@champion")
    parser = _Tables()
    parser.feed((out / "report.html").read_text())
    for split in ("validation", "test"):
        paths = sorted((synthetic_data / split).glob("*/*.jpg"))
        truth = [{"hat": "cap_and_hat", "outwear": "outerwear", "t-shirt": "tops", "pants": "bottoms",
                  "shoes": "shoes"}[path.parent.name] for path in paths]
        predicted = model.unwrap_python_model().predict_files([str(p) for p in paths])["label"]
        expected = classification_report(truth, predicted, labels=LABELS, output_dict=True, zero_division=0)
        rows = {row[0]: row[1:] for row in parser.tables[f"per-label-{split}"][1:]}
        assert list(rows) == [*LABELS, "accuracy", "macro avg", "weighted avg"]
        for name in [*LABELS, "macro avg", "weighted avg"]:
            shown = [float(value) for value in rows[name]]
            want = [expected[name][key] for key in ("precision", "recall", "f1-score", "support")]
            assert shown == pytest.approx(want, abs=5e-4), (split, name)
        assert float(rows["accuracy"][2]) == pytest.approx(expected["accuracy"], abs=5e-4)
        assert rows["accuracy"][:2] == ["", ""] and int(rows["accuracy"][3]) == len(paths)
        assert f"per-label-{split}-baseline" in parser.tables


@pytest.mark.slow
def test_report_renders_offline_in_headless_chromium(reported, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian `chromium` is not installed (apt-get install chromium; .ci/run installs it)")
    directory, out, _ = reported
    report = out / "report.html"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HOME": str(tmp_path)}).stdout
    screenshot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={screenshot}", "--window-size=1280,3000", report.as_uri()],
                   capture_output=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})

    class Page(html.parser.HTMLParser):
        headings, images, in_h2 = [], [], False

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.images.append(dict(attrs)["src"])
            if tag == "h2":
                self.in_h2 = True
                self.headings.append("")

        def handle_endtag(self, tag):
            self.in_h2 = self.in_h2 and tag != "h2"

        def handle_data(self, data):
            if self.in_h2:
                self.headings[-1] += data

    page = Page()
    page.feed(dom)
    assert page.headings == SECTIONS
    assert len(page.images) >= 10
    for source in page.images:  # embedded, or a file next to the report: nothing from the network
        assert source.startswith("data:image/") or (out / source).is_file(), source[:80]
    assert "suspected label errors" in dom and "true " in dom and "Verdict" in dom
    assert screenshot.is_file() and screenshot.stat().st_size > 20_000


def test_report_and_clean_on_a_train_file_whose_name_is_not_utf8(isolated, synthetic_data, tmp_path):
    """The label-noise CSVs, the report and the exclusion list carry the name through (surrogate escapes),
    and nothing crashes on it."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_data, root)
    source = next((root / "train" / "hat").glob("*.jpg"))
    odd = os.fsencode(root / "train" / "hat") + b"/hat_\xff\xfe.jpg"
    os.rename(os.fsencode(source), odd)
    study = isolated / "hog.yaml"
    study.write_text("study: {name: hog, n_trials: 1}\ndata: {label_map: camp5}\nseed: 3\n"
                     "preprocess: {crop_method: none, mode: gray, size: 32}\nmodel: {family: hog_linear}\n")
    assert cli.main(["sweep", str(study), "--data", str(root)]) == 0
    out = isolated / "report"
    assert cli.main(["report", "--folds", "2", "--no-log", "--bootstrap", "100", "--out", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert cli.main(["clean", "--report-dir", str(out), "--out", str(isolated / "excluded.txt"), "--review", "0"]) == 0
    assert (isolated / "excluded.txt").is_file()
