"""camp.labelnoise: confident learning finds flipped labels; exclusion lists leave out train suspects only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from camp import labelnoise
from tests.synthetic import SHAPES, make_image_folder


def hog_logistic(x_train, y_train, x_test, n_classes):
    """A cheap stand-in for the CNN: HOG features and logistic regression (seconds, not minutes)."""
    from skimage.feature import hog
    from sklearn.linear_model import LogisticRegression

    def features(x):
        return np.array([hog(image[:, :, 0], orientations=8, pixels_per_cell=(8, 8), cells_per_block=(2, 2))
                         for image in x])

    model = LogisticRegression(max_iter=2000).fit(features(x_train), y_train)
    out = np.zeros((len(x_test), n_classes))
    out[:, model.classes_] = model.predict_proba(features(x_test))
    return out


def flipped_dataset(root: Path, per_label: int = 4, seed: int = 0) -> tuple[Path, set[str]]:
    """Synthetic train/validation folders where `per_label` train images of each class sit in another class."""
    make_image_folder(root, per_class={"train": 40, "validation": 10}, splits=("train", "validation"), seed=seed)
    rng = np.random.default_rng(seed)
    classes = list(SHAPES)
    moves = []
    for index, source in enumerate(classes):
        files = sorted((root / "train" / source).glob("*.jpg"))
        for file in rng.choice(files, per_label, replace=False):
            moves.append((file, classes[(index + int(rng.integers(1, len(classes)))) % len(classes)]))
    flipped = set()
    for file, target in moves:
        destination = root / "train" / target / f"flipped_{file.name}"
        shutil.move(file, destination)
        flipped.add(destination.relative_to(root).as_posix())
    return root, flipped


def test_confident_learning_finds_most_flipped_labels(isolated):
    """Measured here (seed 0): 15 of 20 flipped images found (recall 0.75), 15 of 16 suspects flipped
    (precision 0.94); over seeds 0-4: 90 of 100 found (recall 0.90), 90 of 92 suspects flipped (0.98)."""
    from camp.preprocess import PreprocessConfig
    from camp.run_config import RunConfig

    root, flipped = flipped_dataset(isolated / "flipped")
    config = RunConfig(preprocess=PreprocessConfig(mode="gray", size=32, crop_method="border"), data_path=str(root))
    oof = labelnoise.out_of_fold(config, folds=3, fit_predict=hog_logistic, log=lambda message: None)
    assert len(oof.relpaths) == 250 and sorted(np.bincount(oof.fold)) == [83, 83, 84]
    assert np.allclose(oof.probabilities.sum(axis=1), 1.0)
    found = {suspect.relpath for suspect in labelnoise.find_suspects(oof)}
    recall, precision = len(found & flipped) / len(flipped), len(found & flipped) / len(found)
    assert recall >= 0.7, (recall, sorted(flipped - found))
    assert precision >= 0.8, (precision, sorted(found - flipped))


def test_exclusion_list_leaves_out_train_suspects_only(synthetic_data, tmp_path):
    from camp.data import load_dataset

    suspects = [labelnoise.Suspect("train/hat/hat_000.jpg", "", "train", "cap_and_hat", "shoes", 0.1, 0.8),
                labelnoise.Suspect("validation/pants/pants_001.jpg", "", "validation", "bottoms", "tops", 0.2, 0.7),
                labelnoise.Suspect("train/shoes/shoes_003.jpg", "", "train", "shoes", "bottoms", 0.3, 0.6)]
    listed = tmp_path / "excluded.txt"
    assert labelnoise.write_exclusion_list(suspects, listed, "test") == 2
    text = listed.read_text()
    assert "train/hat/hat_000.jpg  # given cap_and_hat (p=0.10), suggested shoes (p=0.80)" in text
    whole, cleaned = load_dataset(synthetic_data), load_dataset(synthetic_data, exclude=str(listed))
    assert cleaned.excluded == ["train/hat/hat_000.jpg", "train/shoes/shoes_003.jpg"]
    assert len(cleaned.split("train")) == len(whole.split("train")) - 2
    assert cleaned.split("validation") == whole.split("validation") and cleaned.split("test") == whole.split("test")


def test_the_review_list_is_bounded_and_a_weak_fold_model_is_warned_about():
    import numpy as np

    from camp.labelnoise import OutOfFold, Suspect, oof_warning, review_list

    suspects = [Suspect(f"train/a/{i}.jpg", f"/d/train/a/{i}.jpg", "train", "tops", "shoes", 0.1, 0.8)
                for i in range(120)]
    assert len(review_list(suspects, 50)) == 50 and review_list(suspects, 50)[0] is suspects[0]
    assert len(review_list(suspects, 0)) == 120
    given = np.array([0] * 60 + [1] * 40)

    def oof(accuracy):
        return OutOfFold(["tops", "shoes"], [], [], [], given, np.zeros((100, 2)), np.zeros(100, int),
                         {"oof_accuracy": accuracy})

    assert "hardly above always predicting the largest label (0.60)" in oof_warning(oof(0.62))
    assert oof_warning(oof(0.9)) is None


def test_names_that_are_not_utf8_survive_the_exclusion_list_and_a_fold_manifest(tmp_path):
    """`camp report` and `camp clean` crashed writing a CSV for a train file whose name is not UTF-8; the
    exclusion list and the fold manifests now carry such names through to the file on disk."""
    import csv
    import os

    from camp import data
    from camp.labelnoise import Suspect, write_exclusion_list

    root = make_image_folder(tmp_path / "d", per_class={"train": 3, "validation": 2}, splits=("train", "validation"),
                             size=(40, 30))
    good = (root / "train" / "hat" / "hat_000.jpg").read_bytes()
    with open(os.path.join(os.fsencode(root / "train" / "hat"), b"caf\xe9.jpg"), "wb") as handle:
        handle.write(good)
    odd = next(item for item in data.load_dataset(root).items if "\udce9" in item.relpath)
    exclusions = tmp_path / "excluded.txt"
    kept = write_exclusion_list([Suspect(odd.relpath, odd.path, "train", "cap_and_hat", "shoes", 0.1, 0.8)],
                                exclusions, "test")
    assert kept == 1
    assert odd.relpath not in {item.relpath for item in data.load_dataset(root, exclude=str(exclusions)).items}
    manifest = tmp_path / "fold.csv"  # written the way labelnoise writes a fold's manifest
    with manifest.open("w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        csv.writer(handle).writerows([["path", "label", "split", "camp_fold"], [odd.path, "hat", "train", 0],
                                      [str(root / "validation" / "hat" / "hat_000.jpg"), "hat", "validation", 0]])
    paths = {item.path for item in data.load_dataset(manifest).items}
    assert odd.path in paths and os.path.exists(odd.path)
