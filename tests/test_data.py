"""camp.data: label maps, layouts (folders, CSV manifest), derived validation, exclusions, fingerprints;
non-ASCII and non-UTF-8 file names, empty class folders, and manifest and label-map mistakes named
(also through `camp data summary`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from camp import data
from camp.cli import main
from tests.conftest import data_summary_stdout
from tests.fixtures import bad_files
from tests.fixtures.bad_files import CASES
from tests.synthetic import make_image_folder

CAMP5 = ("cap_and_hat", "outerwear", "tops", "bottoms", "shoes")


def small_folder(root: Path, splits=("train", "validation"), per_class=None) -> Path:
    return make_image_folder(root, per_class=per_class or {"train": 4, "validation": 2, "test": 2}, splits=splits,
                             size=(40, 30))


def test_camp5_counts_on_the_synthetic_dataset(synthetic_data):
    dataset = data.load_dataset(synthetic_data)
    assert dataset.labels == CAMP5
    assert dataset.splits == ["train", "validation", "test"]
    assert dataset.counts() == {"train": dict.fromkeys(CAMP5, 16), "validation": dict.fromkeys(CAMP5, 6),
                                "test": dict.fromkeys(CAMP5, 6)}
    assert dataset.dropped == {} and not dataset.derived_validation and dataset.excluded == []
    by_source = {item.source: dataset.labels[item.label] for item in dataset.items}
    assert by_source == {"hat": "cap_and_hat", "outwear": "outerwear", "t-shirt": "tops", "pants": "bottoms",
                         "shoes": "shoes"}
    item = dataset.split("train")[0]
    assert item.relpath == "train/hat/hat_000.jpg" and Path(item.path).is_file()


def test_dropped_class_is_reported(tmp_path):
    root = small_folder(tmp_path / "d")
    dress = root / "train" / "dress"
    dress.mkdir()
    for index in range(3):
        shutil.copy(root / "train" / "hat" / "hat_000.jpg", dress / f"dress_{index}.jpg")
    dataset = data.load_dataset(root)
    assert dataset.dropped == {"dress": 3}
    assert "dress" in dataset.drop_reasons["dress"]
    assert all(item.source != "dress" for item in dataset.items)
    assert len(dataset.split("train")) == 20


def test_unknown_class_is_named(tmp_path):
    root = small_folder(tmp_path / "d")
    socks = root / "validation" / "socks"
    socks.mkdir()
    shutil.copy(root / "train" / "hat" / "hat_000.jpg", socks / "sock.jpg")
    with pytest.raises(ValueError) as error:
        data.load_dataset(root)
    message = str(error.value)
    assert "'socks'" in message and "sock.jpg" in message and "camp5" in message


def test_identity_and_custom_label_maps(tmp_path):
    root = tmp_path / "camp_labels"
    for label in CAMP5:
        (root / "train" / label).mkdir(parents=True)
        (root / "train" / label / "a.jpg").write_bytes(b"x")
        (root / "train" / label / "b.jpg").write_bytes(b"y")
    dataset = data.load_dataset(root, "identity")
    assert dataset.labels == CAMP5
    assert Counter(item.source for item in dataset.items) == dict.fromkeys(CAMP5, 2)
    mine = tmp_path / "two.yaml"
    mine.write_text("labels: [head, rest]\nmap: {cap_and_hat: head, outerwear: rest, tops: rest}\n"
                    "drop: {bottoms: no, shoes: no}\n")
    dataset = data.load_dataset(root, str(mine))
    assert dataset.labels == ("head", "rest")
    assert sum(dataset.counts()[split]["rest"] for split in dataset.splits) == 4
    assert dataset.dropped == {"bottoms": 2, "shoes": 2}


def test_label_map_errors(tmp_path):
    with pytest.raises(ValueError, match="no label map 'camp7'.*camp5"):
        data.load_label_map("camp7")
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [a]\nmap: {x: b}\n")
    with pytest.raises(ValueError, match="map targets \\['b'\\]"):
        data.load_label_map(str(bad))
    bad.write_text("labels: [a]\nmaps: {x: a}\n")
    with pytest.raises(ValueError, match="unknown key.*maps"):
        data.load_label_map(str(bad))


def write_manifest_dataset(tmp_path) -> Path:
    """Images in tmp/images/, the CSV in tmp/lists/ with paths relative to the CSV."""
    source = small_folder(tmp_path / "src")
    images = tmp_path / "images"
    images.mkdir()
    rows = ["path,label,split"]
    for index, file in enumerate(sorted(source.glob("*/*/*.jpg"))):
        target = images / f"{index:03d}.jpg"
        shutil.copy(file, target)
        split = {"train": "train", "validation": "val"}[file.parent.parent.name]
        rows.append(f"../images/{target.name},{file.parent.name},{split}")
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = lists / "all.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def test_csv_manifest(tmp_path, monkeypatch):
    manifest = write_manifest_dataset(tmp_path)
    monkeypatch.chdir(tmp_path / "src")  # paths are relative to the CSV, not the working directory
    dataset = data.load_dataset(manifest)
    assert dataset.counts() == {"train": dict.fromkeys(CAMP5, 4), "validation": dict.fromkeys(CAMP5, 2)}
    assert not dataset.derived_validation
    for item in dataset.items:
        assert Path(item.path).is_file()
        assert item.relpath.startswith("../images/")
    # a folder holding manifest.csv reads the manifest
    folder = tmp_path / "lists"
    (folder / "all.csv").rename(folder / "manifest.csv")
    assert data.load_dataset(folder).counts() == dataset.counts()


def test_csv_manifest_without_split_column_gets_a_derived_validation(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    rows = ["path,label"] + [f"{label}_{i}.jpg,{label}" for label in ("hat", "shoes") for i in range(5)]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    dataset = data.load_dataset(root)
    assert dataset.derived_validation
    assert {split: sum(c.values()) for split, c in dataset.counts().items()} == {"train": 8, "validation": 2}


@pytest.mark.parametrize("text, pattern", [
    ("file,label\na.jpg,hat\n", "needs columns path,label"),
    ("path,label,split\na.jpg,hat,train\nb.jpg,hat,holdout\n", "line 3: split 'holdout'"),
])
def test_csv_manifest_errors(tmp_path, text, pattern):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        data.load_dataset(manifest)


def test_short_manifest_row_names_the_line(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\na.jpg,hat,train\nb.jpg\n")
    with pytest.raises(ValueError, match="line 3"):
        data.load_dataset(manifest)


def test_derived_validation_is_seeded_and_stratified(tmp_path):
    root = small_folder(tmp_path / "d", splits=("train",), per_class={"train": 10})
    first = data.load_dataset(root, validation_fraction=0.3, seed=3)
    again = data.load_dataset(root, validation_fraction=0.3, seed=3)
    other = data.load_dataset(root, validation_fraction=0.3, seed=4)
    assert first.derived_validation
    validation = [item.relpath for item in first.split("validation")]
    assert validation == [item.relpath for item in again.split("validation")]
    assert validation != [item.relpath for item in other.split("validation")]
    assert first.counts() == {"train": dict.fromkeys(CAMP5, 7), "validation": dict.fromkeys(CAMP5, 3)}
    assert sorted(item.relpath for item in first.items) == sorted(item.relpath for item in other.items)


def test_derived_validation_keeps_every_label_even_when_small(tmp_path):
    root = small_folder(tmp_path / "d", splits=("train",), per_class={"train": 2})
    dataset = data.load_dataset(root, validation_fraction=0.05)
    assert dataset.counts() == {"train": dict.fromkeys(CAMP5, 1), "validation": dict.fromkeys(CAMP5, 1)}


def test_class_folders_without_split_folders_are_train(tmp_path):
    root = small_folder(tmp_path / "d", splits=("train",), per_class={"train": 3}) / "train"
    dataset = data.load_dataset(root)
    assert dataset.derived_validation
    assert sum(dataset.counts()["train"].values()) + sum(dataset.counts()["validation"].values()) == 15
    assert dataset.items[0].relpath == "hat/hat_000.jpg"


def test_no_images_is_an_error(tmp_path):
    (tmp_path / "empty" / "train" / "hat").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found"):
        data.load_dataset(tmp_path / "empty")


def test_exclusion_file_removes_only_train_items(synthetic_data, tmp_path):
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# mislabelled\ntrain/hat/hat_003.jpg  # a cap, really\n\nvalidation/pants/pants_001.jpg\n"
                       "train/not/there.jpg\n")
    dataset = data.load_dataset(synthetic_data, exclude=str(exclude))
    relpaths = {item.relpath for item in dataset.items}
    assert "train/hat/hat_003.jpg" not in relpaths
    assert "validation/pants/pants_001.jpg" in relpaths  # validation never changes
    assert dataset.excluded == ["train/hat/hat_003.jpg"]
    assert dataset.counts()["train"]["cap_and_hat"] == 15
    assert dataset.counts()["validation"] == dict.fromkeys(CAMP5, 6)
    with pytest.raises(ValueError, match="data.exclude: no such file"):
        data.load_dataset(synthetic_data, exclude=str(tmp_path / "absent.txt"))


def test_max_per_class(synthetic_data):
    dataset = data.load_dataset(synthetic_data, max_per_class=4, seed=1)
    assert dataset.counts() == {split: dict.fromkeys(CAMP5, 4) for split in ("train", "validation", "test")}
    again = data.load_dataset(synthetic_data, max_per_class=4, seed=1)
    assert [i.relpath for i in again.items] == [i.relpath for i in dataset.items]
    other = data.load_dataset(synthetic_data, max_per_class=4, seed=2)
    assert [i.relpath for i in other.items] != [i.relpath for i in dataset.items]
    assert data.load_dataset(synthetic_data, max_per_class=100).counts()["train"] == dict.fromkeys(CAMP5, 16)


def test_fingerprint_follows_file_bytes(tmp_path):
    root = small_folder(tmp_path / "d")
    before = data.fingerprint(data.load_dataset(root).items)
    assert data.fingerprint(data.load_dataset(root).items) == before
    target = root / "validation" / "shoes" / "shoes_001.jpg"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    changed = data.fingerprint(data.load_dataset(root).items)
    assert changed != before
    # the split matters too, not only the bytes
    items = data.load_dataset(root).items
    moved = [data.dataclasses.replace(items[0], split="test")] + items[1:]
    assert data.fingerprint(moved) != changed


def test_duplicates_across_splits(tmp_path):
    root = small_folder(tmp_path / "d", splits=("train", "validation", "test"))
    assert data.duplicates_across_splits(data.load_dataset(root).items) == []
    shutil.copy(root / "train" / "pants" / "pants_002.jpg", root / "test" / "pants" / "copied.jpg")
    # an identical file inside one split is not leakage
    shutil.copy(root / "train" / "hat" / "hat_000.jpg", root / "train" / "hat" / "again.jpg")
    groups = data.duplicates_across_splits(data.load_dataset(root).items)
    assert groups == [["test:test/pants/copied.jpg", "train:train/pants/pants_002.jpg"]]


def test_resolve_data_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAMP_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as error:
        data.resolve_data_path()
    assert "make data" in str(error.value) and "data/clothing-small" in str(error.value)
    with pytest.raises(FileNotFoundError, match="make data"):
        data.resolve_data_path(str(tmp_path / "nowhere"))
    (tmp_path / "cli").mkdir()
    (tmp_path / "cfg").mkdir()
    (tmp_path / "env").mkdir()
    monkeypatch.setenv("CAMP_DATA", str(tmp_path / "env"))
    assert data.resolve_data_path() == tmp_path / "env"
    assert data.resolve_data_path(None, str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert data.resolve_data_path(str(tmp_path / "cli"), str(tmp_path / "cfg")) == tmp_path / "cli"
    # a path that is given but missing is an error, not a silent fall-back to the next candidate
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.resolve_data_path(str(tmp_path / "nowhere"), str(tmp_path / "cfg"))


# -- non-ASCII and non-UTF-8 names, empty class folders --------------------------------------------------

def test_non_ascii_and_non_utf8_file_names(tmp_path, isolated, no_memory_cache, capsys):
    root = make_image_folder(tmp_path / "d", per_class={"train": 3, "validation": 2}, size=(40, 30))
    good = (root / "train" / "hat" / "hat_000.jpg").read_bytes()
    hat = os.fsencode(root / "train" / "hat")
    (root / "train" / "hat" / CASES["non_ascii_name"].filename).write_bytes(good)
    with open(os.path.join(hat, b"caf\xe9 latin-1.jpg"), "wb") as handle:  # not valid UTF-8
        handle.write(good)
    with open(os.path.join(hat, b"vide \xe9.jpg"), "wb") as handle:  # not UTF-8 and unreadable
        handle.write(b"")
    dataset = data.load_dataset(root)
    assert len(dataset.split("train")) == 15 + 3
    data.fingerprint(dataset.items)  # hashes names that are not UTF-8
    summary = json.loads(data_summary_stdout(capsys, root, isolated))
    assert summary["splits"]["train"]["cap_and_hat"] == 5
    assert list(summary["skipped"]["files"]) == ["train/hat/vide \udce9.jpg"]
    # the table, in a real process (its stderr escapes what it cannot encode)
    table = subprocess.run([sys.executable, "-m", "camp.cli", "data", "summary", "--data", str(root), "--out",
                            str(isolated / "r2")], cwd=isolated, capture_output=True, timeout=300)
    assert table.returncode == 0, table.stderr[-2000:]
    assert b"vide \\udce9.jpg: empty file" in table.stderr


def test_empty_class_folder_counts_zero(tmp_path, isolated, no_memory_cache, capsys):
    root = make_image_folder(tmp_path / "d", per_class={"train": 4, "validation": 2}, size=(40, 30))
    for file in (root / "train" / "shoes").iterdir():
        file.unlink()
    (root / "validation" / "socks").mkdir()  # unknown to the label map, but empty: nothing to refuse
    summary = json.loads(data_summary_stdout(capsys, root, isolated))
    assert summary["splits"]["train"]["shoes"] == 0 and summary["splits"]["validation"]["shoes"] == 2
    assert main(["data", "summary", "--data", str(root), "--out", str(isolated / "r2")]) == 0
    shoes = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("shoes"))
    assert shoes.split() == ["shoes", "0", "2"]


# -- manifests and label maps: refused before anything runs ---------------------------------------------

def test_manifest_label_unknown_to_the_label_map_names_the_line(tmp_path, isolated, capsys):
    manifest, line = bad_files.manifest_with_unknown_label(tmp_path / "m")
    with pytest.raises(ValueError) as error:
        data.load_dataset(manifest)
    message = str(error.value)
    assert f"{manifest}: line {line} (img2.jpg): label 'socks' is not in label map 'camp5'" in message
    assert "known: " in message and "maps or drops it" in message
    assert main(["data", "summary", "--data", str(manifest), "--out", str(isolated / "r")]) == 2
    assert f"line {line}" in capsys.readouterr().err


def test_manifest_from_a_spreadsheet_and_in_another_encoding(tmp_path):
    manifest, _ = bad_files.manifest_with_unknown_label(tmp_path / "m")
    rows = manifest.read_text(encoding="utf-8").replace("socks", "hat")
    manifest.write_bytes(b"\xef\xbb\xbf" + rows.encode("utf-8"))  # Excel's byte-order mark before `path`
    assert len(data.load_dataset(manifest).items) == 4
    manifest.write_bytes(rows.replace("img0.jpg", "caf\u00e9.jpg").encode("latin-1"))
    with pytest.raises(ValueError, match=r"m/manifest.csv: not UTF-8 text .*save the CSV as UTF-8"):
        data.load_dataset(manifest)


@pytest.mark.parametrize("text, pattern", [
    ("labels: [a, b\nmap: {x: a}\n", r"bad.yaml: YAML syntax error at line 2, column"),
    ("- a\n- b\n", "a label map is a mapping"),
    ("labels: tops\n", "`labels` must be a list of names"),
    ("labels: [a, a]\n", "lists a label twice"),
    ("labels: [a]\nmap: [x, a]\n", "`map` must be a mapping"),
    ("labels: [a]\ndrop: dress\n", "`drop` must be a mapping"),
])
def test_label_map_file_mistakes_are_named(tmp_path, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        data.load_label_map(str(path))
