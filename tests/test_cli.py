"""camp.cli, in process: `camp data summary`, `camp preprocess show`, and errors as exit status 2."""

from __future__ import annotations

import json
import shutil

import pytest

from camp import data
from camp.cli import main

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
    from camp import images

    monkeypatch.setattr(images, "_MEMORY", {})  # released after the test
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
