"""camp.cli, in process: `camp data summary`, `camp preprocess show`, and errors as exit status 2;
`camp data summary` and `camp train` on a dataset holding every awkward file of `tests/fixtures/bad_files.py`
(the readable used, the rest skipped, counted and listed or logged)."""

from __future__ import annotations

import json
import shutil

import pytest

from camp import data
from camp.cli import main
from tests.conftest import data_summary_stdout
from tests.fixtures import bad_files
from tests.fixtures.bad_files import CASES, READ, SKIPPED, deny_reading

LABELS = ["cap_and_hat", "outerwear", "tops", "bottoms", "shoes"]


def summary_json(capsys, *args) -> dict:
    assert main(["data", "summary", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_data_summary_json(isolated, synthetic_data, capsys):
    out = isolated / "report"
    summary = summary_json(capsys, "--data", str(synthetic_data), "--out", str(out))
    assert summary["splits"] == {"train": dict.fromkeys(LABELS, 16), "validation": dict.fromkeys(LABELS, 6),
                                 "test": dict.fromkeys(LABELS, 6)}
    assert list(summary["splits"]["train"]) == LABELS  # in label-map order
    assert summary["label_map"] == "camp5"
    assert summary["fingerprint"] == data.fingerprint(data.load_dataset(synthetic_data).items)
    assert summary["skipped"]["count"] == 0 and summary["dropped"] == {}
    assert summary["validation_derived"] is False and summary["duplicates_across_splits"] == []
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (out / "label_counts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_summary_reports_skipped_dropped_and_leaked_files(isolated, synthetic_data, capsys):
    root = isolated / "copy"
    shutil.copytree(synthetic_data, root)
    (root / "train" / "shoes" / "broken.jpg").write_bytes(b"")
    (root / "train" / "dress").mkdir()
    shutil.copy(root / "train" / "hat" / "hat_001.jpg", root / "train" / "dress" / "d.jpg")
    shutil.copy(root / "train" / "pants" / "pants_000.jpg", root / "test" / "pants" / "leak.jpg")
    summary = summary_json(capsys, "--data", str(root), "--out", str(isolated / "report"))
    assert summary["splits"]["train"]["shoes"] == 16  # the unreadable file is not counted
    assert summary["splits"]["test"]["bottoms"] == 7
    assert summary["skipped"]["count"] == 1
    assert summary["skipped"]["by_split"] == {"train": {"shoes": 1}}
    assert list(summary["skipped"]["files"]) == ["train/shoes/broken.jpg"]
    assert "empty file" in summary["skipped"]["files"]["train/shoes/broken.jpg"]
    assert summary["dropped"]["dress"]["count"] == 1 and "dress" in summary["dropped"]["dress"]["reason"]
    assert summary["duplicates_across_splits"] == [["test:test/pants/leak.jpg", "train:train/pants/pants_000.jpg"]]
    # the table says the same, with warnings on stderr
    assert main(["data", "summary", "--data", str(root), "--out", str(isolated / "report")]) == 0
    captured = capsys.readouterr()
    assert "left out: 1 'dress' images" in captured.out
    assert "skipped 1 unreadable file" in captured.err and "broken.jpg" in captured.err
    assert "leakage" in captured.err


def test_data_summary_table(isolated, synthetic_data, capsys):
    assert main(["data", "summary", "--data", str(synthetic_data), "--out", str(isolated / "r")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("label"))
    assert header.split() == ["label", "train", "validation", "test"]
    assert next(line for line in lines if line.startswith("tops")).split() == ["tops", "16", "6", "6"]
    assert next(line for line in lines if line.startswith("total")).split() == ["total", "80", "30", "30"]
    assert any("label_counts.png" in line for line in lines)


def test_data_summary_derives_validation_when_absent(isolated, synthetic_data, capsys):
    root = isolated / "train_only"
    shutil.copytree(synthetic_data / "train", root / "train")
    summary = summary_json(capsys, "--data", str(root), "--out", str(isolated / "r"), "--seed", "1")
    assert summary["validation_derived"] is True
    assert summary["splits"]["validation"] == dict.fromkeys(LABELS, 2)  # round(16 * 0.1)
    assert summary["splits"]["train"] == dict.fromkeys(LABELS, 14)


def test_data_summary_on_the_real_data(isolated, shared_data, capsys, monkeypatch):
    from camp import caches

    monkeypatch.setattr(caches, "_MEMORY", {})  # released after the test
    try:
        summary = summary_json(capsys, "--data", str(shared_data), "--out", str(isolated / "r"))
    finally:
        shutil.rmtree(isolated / "cache", ignore_errors=True)  # ~0.5 GB of decoded photos
    assert summary["splits"]["train"] == {"cap_and_hat": 123, "outerwear": 184, "tops": 1540, "bottoms": 782,
                                          "shoes": 198}
    assert set(summary["splits"]) == {"train", "validation", "test"}
    assert summary["dropped"]["dress"]["count"] > 0
    assert summary["validation_derived"] is False


def test_missing_dataset_exits_2_with_the_way_to_get_it(isolated, capsys, monkeypatch):
    assert main(["data", "summary", "--data", str(isolated / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("camp: error:") and "nowhere" in err and "make data" in err
    monkeypatch.delenv("CAMP_DATA", raising=False)
    assert main(["data", "summary"]) == 2  # the default data/clothing-small, relative to the working directory
    err = capsys.readouterr().err
    assert "data/clothing-small" in err and "make data" in err


def test_unknown_label_map_exits_2(isolated, synthetic_data, capsys):
    assert main(["data", "summary", "--data", str(synthetic_data), "--label-map", "camp9"]) == 2
    assert "no label map 'camp9'" in capsys.readouterr().err


def test_train_with_a_search_range_exits_2_naming_the_knob(isolated, synthetic_data, capsys):
    (isolated / "range.yaml").write_text("model: {learning_rate: {float: [1.0e-4, 1.0e-2], log: true}}\n")
    assert main(["train", str(isolated / "range.yaml"), "--data", str(synthetic_data)]) == 2
    err = capsys.readouterr().err
    assert "model.learning_rate is a search range" in err and "camp sweep" in err
    (isolated / "typo.yaml").write_text("study: {n_trail: 3}\n")
    assert main(["train", str(isolated / "typo.yaml"), "--data", str(synthetic_data)]) == 2
    assert "n_trail" in capsys.readouterr().err


def test_preprocess_show_writes_the_grid(isolated, synthetic_data, capsys):
    (isolated / "gray.yaml").write_text("preprocess: {mode: gray, size: 24}\n")
    out = isolated / "grid" / "pre.png"
    assert main(["preprocess", "show", "--config", str(isolated / "gray.yaml"), "--data", str(synthetic_data),
                 "--per-label", "1", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as error:
        main([])
    assert error.value.code == 2
    with pytest.raises(SystemExit) as error:
        main(["data", "summary", "--no-such-flag"])
    assert error.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


# -- every awkward file through `camp data summary` and `camp train` ------------------------------------

@pytest.fixture()
def planted(isolated, synthetic_data, monkeypatch, no_memory_cache):
    """A copy of the synthetic dataset holding every bad file (train/hat/), a train image copied into
    test/, and an empty test/shoes/ folder; unreadable permissions simulated when running as root."""
    root = isolated / "planted"
    shutil.copytree(synthetic_data, root)
    where = bad_files.plant(root)
    if not bad_files.permission_is_enforced(isolated):
        deny_reading(monkeypatch)
    return root, where


def test_data_summary_uses_the_readable_and_lists_the_rest(planted, isolated, capsys):
    root, where = planted
    summary = json.loads(data_summary_stdout(capsys, root, isolated))
    assert summary["splits"]["train"]["cap_and_hat"] == 16 + len(READ)  # every readable oddity counts
    assert summary["splits"]["test"]["shoes"] == 0  # the empty class folder
    assert summary["splits"]["test"]["bottoms"] == 7
    assert summary["skipped"]["count"] == len(SKIPPED)
    assert sorted(summary["skipped"]["files"]) == where.skipped
    for name in SKIPPED:
        relpath = where.files[name]
        assert CASES[name].reason in summary["skipped"]["files"][relpath], name
    assert summary["skipped"]["by_split"] == {"train": {"cap_and_hat": len(SKIPPED)}}
    leak = sorted(f"{relpath.split('/')[0]}:{relpath}" for relpath in where.duplicate)
    assert summary["duplicates_across_splits"] == [leak]
    # the table run says the same on stderr
    assert main(["data", "summary", "--data", str(root), "--out", str(isolated / "r2")]) == 0
    err = capsys.readouterr().err
    assert f"skipped {len(SKIPPED)} unreadable file(s)" in err and "leakage" in err
    for name in SKIPPED:
        assert CASES[name].filename in err


TINY_TRAIN = """study: {name: hardening}
seed: 3
preprocess: {mode: gray, size: 24, scale: 0.25, crop_method: none}
model: {conv_blocks: 1, filters: 8, dense_units: 8, batch_size: 32, max_epochs: 1, patience: 1, augmentation: false}
"""


def test_camp_train_skips_and_logs_the_unreadable(planted, isolated, capsys):
    import mlflow
    from mlflow import MlflowClient

    root, where = planted
    config = isolated / "tiny.yaml"
    config.write_text(TINY_TRAIN)
    capsys.readouterr()
    assert main(["train", str(config), "--data", str(root)]) == 0
    captured = capsys.readouterr()
    run_id = json.loads(captured.out.strip().splitlines()[-1])["run_id"]
    assert f"skipped {len(SKIPPED)} unreadable image(s)" in captured.err
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["camp.skipped_images"] == str(len(SKIPPED))
    logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/skipped_images.json")
    assert sorted(logged) == where.skipped
    for name in SKIPPED:
        assert CASES[name].reason in logged[where.files[name]]
