"""camp.ablate on synthetic images: bad --vary/--set refused before any run; a knob that cannot matter
gives "no difference"; a knob built to matter (labels told apart by colour alone) gives a verdict whose
interval excludes 0; Ctrl-C then a rerun trains only the missing cells; the report shows the ablation."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from camp import ablate, cli
from camp import objective as objective_module
from camp.config import load_study_file
from camp.run_config import fixed_run_config

HOG_BASE = """
study: {name: hog-base}
data: {label_map: camp5}
seed: 3
preprocess: {crop_method: none, mode: gray, size: 32}
model: {family: hog_linear, hog_cell: 8}
"""
CNN_BASE = """
study: {name: cnn-base}
data: {label_map: camp5}
seed: 3
preprocess: {crop_method: none, mode: gray, size: 16}
model: {conv_blocks: 1, filters: 8, dense_units: 0, batch_size: 16, max_epochs: 6, patience: 6, min_epochs: 1,
        learning_rate: 0.01, augmentation: false, dropout: 0.0}
"""
# RGB colours of equal luminance (0.299 R + 0.587 G + 0.114 B = 128): gray images of them are all alike
COLOURS = {"hat": (255, 88, 0), "outwear": (0, 169, 255), "t-shirt": (0, 218, 0), "pants": (255, 39, 255),
           "shoes": (128, 128, 128)}


def _file(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _ablate(*extra) -> int:
    return cli.main(["ablate", *map(str, extra)])


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> Path:
    """Labels told apart by colour alone: each class one hue, all of one luminance, with gray noise."""
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("validation", 6), ("test", 10)):
        for source, (red, green, blue) in COLOURS.items():
            folder = root / split / source
            folder.mkdir(parents=True)
            for index in range(count):
                noise = rng.normal(0, 18, (40, 40, 1))
                image = np.clip(np.array([blue, green, red], float) + noise, 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{source}_{index:02d}.png"), image)
    return root


def test_bad_vary_and_set_are_refused_naming_them(isolated, synthetic_data, capsys):
    base = _file(isolated, HOG_BASE, "base")
    for extra, message in [(["--vary", "preprocess.colour=gray,color"], "'preprocess.colour' is not a knob"),
                           (["--vary", "mode"], "expected KNOB=VALUE"),
                           (["--vary", "mode=gray,gray"], "at least two different values"),
                           (["--vary", "mode=gray,sepia"], "preprocess.mode='sepia'"),
                           (["--vary", "model.replica=0,1"], "use --seeds"),
                           (["--vary", "mode=gray,color", "--vary", "preprocess.mode=gray,binary"], "more than once"),
                           (["--vary", "mode=gray,color", "--set", "model.max_epochs=0"], "max_epochs"),
                           (["--vary", "mode=gray,color", "--seeds", "0"], "--seeds"),
                           ([], "at least one --vary")]:
        assert _ablate("--base", base, "--data", synthetic_data, *extra) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert not (isolated / "mlruns" / "ablations").exists() or not list((isolated / "mlruns" / "ablations").iterdir())
    assert _ablate("--base", "champion", "--vary", "mode=gray,color") == 2
    assert "no such registered model version" in capsys.readouterr().err


def test_cells_share_the_base_value_and_bare_knob_names_resolve(isolated, synthetic_data):
    base = fixed_run_config(load_study_file(_file(isolated, HOG_BASE, "base")), str(synthetic_data))
    varies = [ablate.parse_assignment("mode=gray,color", "--vary"),
              ablate.parse_assignment("model.hog_c=0.1,1.0", "--vary")]
    assert varies[0] == ("preprocess.mode", ["gray", "color"])
    cells = ablate.plan_cells(base, varies, seeds=2)
    # gray (the base mode) with hog_c 1.0 (the base) is one cell per seed, not two
    assert len(cells) == 6 and sum(cell.label == "base" for cell in cells) == 2


def test_a_knob_that_cannot_matter_gives_no_difference(isolated, synthetic_data, capsys):
    base = _file(isolated, HOG_BASE, "base")
    # dropout is a CNN knob: the HOG model does not read it, so both values train the same model
    assert _ablate("--base", base, "--data", synthetic_data, "--vary", "model.dropout=0.1,0.4", "--seeds", "2",
                   "--workers", "2", "--bootstrap", "200") == 0
    out = capsys.readouterr().out
    assert "no difference this data can show" in out
    (result,) = json.loads(next((isolated / "reports" / "ablations").glob("*/ablation.json")).read_text())["knobs"]
    assert [row["seeds"] for row in result["rows"]] == [2, 2] and result["pairs"][0]["interval"] == [0.0, 0.0]


@pytest.mark.slow
def test_colour_beats_gray_where_only_colour_tells_the_labels_apart(isolated, colour_data, capsys):
    base = _file(isolated, CNN_BASE, "cnn")
    assert _ablate("--base", base, "--data", colour_data, "--vary", "preprocess.mode=gray,color", "--seeds", "2",
                   "--bootstrap", "300") == 0
    (result,) = json.loads(next((isolated / "reports" / "ablations").glob("*/ablation.json")).read_text())["knobs"]
    rows = {row["value"]: row for row in result["rows"]}
    assert rows["color"]["test"] > rows["gray"]["test"] + 0.3
    (pair,) = result["pairs"]
    assert pair["first"] == "color" and pair["interval"][0] > 0
    assert "color beats gray by" in capsys.readouterr().out


def test_after_ctrl_c_a_rerun_trains_only_the_missing_cells(isolated, synthetic_data, monkeypatch, capsys):
    base = _file(isolated, HOG_BASE, "base")
    command = ["--base", base, "--data", synthetic_data, "--vary", "model.hog_c=0.05,1.0", "--seeds", "2",
               "--bootstrap", "100"]
    real_train, calls = objective_module.train, []

    def interrupted_on_the_third(config, **kwargs):
        calls.append(config)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_train(config, **kwargs)

    monkeypatch.setattr(objective_module, "train", interrupted_on_the_third)
    assert _ablate(*command) == 130
    assert len(calls) == 3
    calls.clear()
    monkeypatch.setattr(objective_module, "train", lambda config, **kwargs: calls.append(config) or real_train(config, **kwargs))
    assert _ablate(*command) == 0
    assert len(calls) == 2  # the interrupted cell and the one never started; not the two complete ones
    assert "2 of 4 cells done, 2 to run" in capsys.readouterr().out
    assert _ablate(*command) == 0 and len(calls) == 2  # all done: the verdict again, no training


def test_the_report_shows_the_champions_ablation_or_names_the_command(isolated, synthetic_data, capsys):
    study = _file(isolated, HOG_BASE.replace("study: {name: hog-base}", "study: {name: hog-base, n_trials: 1}"), "s")
    assert cli.main(["sweep", str(study), "--data", str(synthetic_data)]) == 0
    report = ["report", "--folds", "0", "--no-log", "--bootstrap", "100", "--out", str(isolated / "report")]
    assert cli.main(report) == 0
    text = (isolated / "report" / "report.md").read_text()
    assert "No controlled experiment on this champion yet" in text and "make ablate" in text
    assert _ablate("--base", "champion", "--vary", "preprocess.mode=gray,binary", "--vary",
                   "model.loss_weighting=none,balanced", "--seeds", "1", "--bootstrap", "100") == 0
    assert cli.main(report) == 0
    text = (isolated / "report" / "report.md").read_text()
    assert "Controlled experiment" in text and "preprocess.mode" in text and "model.loss_weighting" in text
    assert (isolated / "report" / "ablation.png").stat().st_size > 1000 and "ablation.png" in text
    capsys.readouterr()
