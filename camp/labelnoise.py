"""Suspected label errors by confident learning (cleanlab) on out-of-fold predicted probabilities.

`out_of_fold` splits train+validation into k stratified folds and, for each fold, trains the
champion's configs with camp's own `train()` on the other folds (a CSV manifest per fold; the fold
itself is the manifest's `test` split, so it never steers training or epoch selection) and predicts
the held-out fold. The result is cached as JSON keyed by model version, folds and epochs, so
`camp report` and `camp clean` share one computation. `fit_predict` swaps the CNN for any cheap
classifier (tests). `write_exclusion_list` writes the list a study file names under `data.exclude`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import mlflow
import numpy as np

from camp import caches, names
from camp.data import FOLD_COLUMN
from camp.registry import CampClassifier
from camp.run_config import prepare_dataset
from camp.train import train

POOL = ("train", "validation")
CACHE_VERSION = 2  # bump when the computation changes: older caches are recomputed


@dataclasses.dataclass
class OutOfFold:
    """Out-of-fold class probabilities for every readable train+validation image."""

    labels: list[str]
    relpaths: list[str]
    paths: list[str]
    splits: list[str]
    given: np.ndarray  # label index as given by the dataset
    probabilities: np.ndarray  # (N, K), each row from the model that did not see the image
    fold: np.ndarray
    meta: dict

    def to_json(self) -> dict:
        return {"labels": self.labels, "relpaths": self.relpaths, "paths": self.paths, "splits": self.splits,
                "given": self.given.tolist(), "probabilities": self.probabilities.round(6).tolist(),
                "fold": self.fold.tolist(), "meta": self.meta}

    @classmethod
    def from_json(cls, document: dict) -> "OutOfFold":
        return cls(document["labels"], document["relpaths"], document["paths"], document["splits"],
                   np.array(document["given"], int), np.array(document["probabilities"], float),
                   np.array(document["fold"], int), document["meta"])


@dataclasses.dataclass
class Suspect:
    relpath: str
    path: str
    split: str
    given: str
    suggested: str
    p_given: float
    p_suggested: float


def cache_name(model_name: str, version: str, folds: int, epochs: int) -> str:
    return f"oof_{model_name}_v{version}_k{folds}_e{epochs}.json"


def out_of_fold(config, folds: int = 3, epochs: int | None = None, fit_predict: Callable | None = None,
                meta: dict | None = None, log=print) -> OutOfFold:
    """Probabilities for each train+validation image from a model trained on the other k-1 folds.

    `config` is the champion's RunConfig; its exclusion list is ignored (every image is judged), and its
    max_epochs is capped at `epochs` when given.
    `fit_predict(x_train, y_train, x_test, n_classes) -> (n_test, n_classes)` replaces camp's
    `train()` when given.
    """
    from sklearn.model_selection import StratifiedKFold

    started = time.time()
    epochs = min(epochs or config.model.max_epochs, config.model.max_epochs)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, exclude=None))
    dataset, fingerprint = prepare_dataset(config)
    arrays = caches.load_arrays(dataset.items, fingerprint, config.preprocess, progress=False)
    pool = [index for index, item in enumerate(arrays.items) if item.split in POOL]
    items, x = [arrays.items[index] for index in pool], arrays.x[pool]
    y = np.array([item.label for item in items])
    n_classes = len(dataset.labels)
    smallest = int(np.bincount(y, minlength=n_classes).min())
    if smallest < folds:
        raise ValueError(f"label-noise search: a label has {smallest} train+validation images, fewer than --folds {folds}")
    probabilities, fold_of, decoded = np.zeros((len(items), n_classes)), np.zeros(len(items), int), None
    fold_values = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    with contextlib.ExitStack() as stack:
        if fit_predict is None and mlflow.active_run() is None:  # the fold runs go under one parent run
            stack.enter_context(mlflow.start_run(run_name=f"label-noise-{fingerprint[:8]}",
                                                 tags={names.ROLE: "label-noise"}))
        for fold, (train_index, test_index) in enumerate(splitter.split(np.zeros(len(y)), y)):
            fold_of[test_index] = fold
            log(f"label noise: fold {fold + 1}/{folds}: training on {len(train_index)}, predicting {len(test_index)}")
            if fit_predict is not None:
                probabilities[test_index] = fit_predict(x[train_index], y[train_index], x[test_index], n_classes)
            else:
                if decoded is None:
                    images, _ = caches.load_decoded(dataset.items, fingerprint, config.preprocess.decode_reduction, False)
                    decoded = {os.path.abspath(item.path): image for item, image in zip(dataset.items, images)}
                probabilities[test_index], value = _train_fold(config, items, x, decoded, train_index, test_index, fold,
                                                               epochs)
                fold_values.append(round(float(value), 4))
    info = {**(meta or {}), "cache_version": CACHE_VERSION, "folds": folds, "epochs": epochs,
            "fold_objective": fold_values, "oof_accuracy": round(float((probabilities.argmax(1) == y).mean()), 4),
            "data_fingerprint": fingerprint,
            "classifier": "camp.train" if fit_predict is None else getattr(fit_predict, "__name__", "custom"),
            "seconds": round(time.time() - started, 1)}
    return OutOfFold(list(dataset.labels), [i.relpath for i in items], [i.path for i in items],
                     [i.split for i in items], y, probabilities, fold_of, info)


def _train_fold(config, items, x_pool, decoded, train_index, test_index, fold: int, epochs: int) -> np.ndarray:
    """camp's train() on a manifest of the training folds; the held-out fold is its test split.

    The fold's decoded images are handed to camp.images' in-process cache (the same pictures, already
    decoded), and the held-out fold's model inputs are the champion's preprocessed arrays (the same
    deterministic pipeline), so a fold costs training only; its derived arrays are removed afterwards.
    """
    # no early stopping: one unlucky start must not end a fold (the best epoch is still chosen on the
    # fold's own validation images, carved from its training folds)
    model = dataclasses.replace(config.model, max_epochs=min(config.model.max_epochs, epochs),
                                patience=min(config.model.max_epochs, epochs))
    with tempfile.TemporaryDirectory() as directory:
        manifest = Path(directory) / f"fold{fold}.csv"
        with manifest.open("w", newline="", encoding="utf-8", errors="surrogateescape") as handle:  # any file name
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "split", FOLD_COLUMN])  # the column: names are written as on disk
            for index, split in [(i, "train") for i in train_index] + [(i, "test") for i in test_index]:
                writer.writerow([os.path.abspath(items[index].path), items[index].source, split, fold])
        fold_config = dataclasses.replace(config, model=model, data_path=str(manifest),
                                          data=dataclasses.replace(config.data, path=None, max_per_class=None))
        dataset, fingerprint = prepare_dataset(fold_config)
        memory_key = caches.decoded_key(fingerprint, config.preprocess.decode_reduction)
        caches._MEMORY[memory_key] = ([decoded[os.path.abspath(item.path)] for item in dataset.items], {})
        try:
            with mlflow.start_run(run_name=f"oof-fold-{fold}", nested=mlflow.active_run() is not None,
                                  tags={names.ROLE: "oof-fold"}):
                result = train(fold_config, progress=False)
            bundle = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="bundle",
                                                         dst_path=directory)
            network = CampClassifier().load_bundle(bundle).model  # a CNN or the classical family alike
        finally:
            caches._MEMORY.pop(memory_key, None)
            caches.arrays_path(fold_config.preprocess.cache_key(fingerprint)).unlink(missing_ok=True)
    return network.predict(x_pool[test_index], batch_size=256, verbose=0), result.value


def load_or_compute(cache: Path, compute: Callable[[], OutOfFold], fingerprint: str | None = None,
                    log=print) -> OutOfFold:
    """The cached result when it is there and for the same data; else compute and write it."""
    if cache.is_file():
        try:
            cached = OutOfFold.from_json(json.loads(cache.read_text()))
        except (ValueError, KeyError, TypeError):
            cached = None
        if (cached is not None and cached.meta.get("cache_version") == CACHE_VERSION
                and (fingerprint is None or cached.meta.get("data_fingerprint") == fingerprint)):
            log(f"label noise: reusing {cache}")
            return cached
    result = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result.to_json()))
    return result


def find_suspects(oof: OutOfFold) -> list[Suspect]:
    """cleanlab's `find_label_issues`, most severe first (lowest probability of the given label)."""
    from cleanlab.filter import find_label_issues

    ranked = find_label_issues(oof.given, oof.probabilities, return_indices_ranked_by="self_confidence")
    out = []
    for index in ranked:
        row, given = oof.probabilities[index], int(oof.given[index])
        suggested = int(row.argmax())
        out.append(Suspect(oof.relpaths[index], oof.paths[index], oof.splits[index], oof.labels[given],
                           oof.labels[suggested], float(row[given]), float(row[suggested])))
    return out


def review_list(suspects: list[Suspect], size: int) -> list[Suspect]:
    """The `size` most confident suspects (they come ranked), all of them for size 0: a list a person can
    review, where cleanlab alone may flag a quarter of a dataset."""
    if size < 0:
        raise ValueError(f"--review must be >= 0, got {size}")
    return suspects[:size] if size else list(suspects)


def oof_warning(oof: OutOfFold) -> str | None:
    """A warning when the fold models are too weak for their suspects to mean anything: out-of-fold
    accuracy not clearly above always predicting the largest label."""
    accuracy = oof.meta.get("oof_accuracy")
    largest = float(np.bincount(oof.given).max() / max(1, len(oof.given)))
    if accuracy is not None and accuracy < largest + 0.1:
        return (f"the fold models' out-of-fold accuracy is {accuracy:.2f}, hardly above always predicting the "
                f"largest label ({largest:.2f}): these suspects say more about the models than about the labels")
    return None


def write_exclusion_list(suspects: list[Suspect], path: Path, source: str) -> int:
    """One train path a line with `# given -> suggested` (validation suspects only as comments)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# Suspected label errors from {source} (confident learning on out-of-fold probabilities).",
             "# Review by hand: delete a line to keep that image. Name this file under `data.exclude:` in a",
             "# study file and its trials train without the listed images. Only train images can be left out;",
             "# validation and test are never altered, so validation suspects are listed as comments."]
    kept = 0
    for suspect in suspects:
        note = (f"# given {suspect.given} (p={suspect.p_given:.2f}), suggested {suspect.suggested} "
                f"(p={suspect.p_suggested:.2f})")
        if suspect.split == "train":
            lines.append(f"{suspect.relpath}  {note}")
            kept += 1
        else:
            lines.append(f"# [{suspect.split}, not excluded] {suspect.relpath}  {note[2:]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")  # names as on disk
    return kept


def champion_oof(champion, args, directory: Path, fit_predict=None) -> OutOfFold:
    """The champion's out-of-fold probabilities: local cache, else the model run's artifact, else computed."""
    epochs = min(args.oof_epochs or champion.config.model.max_epochs, champion.config.model.max_epochs)
    name = cache_name(champion.name, champion.version, args.folds, epochs)
    cache = directory / name
    unexcluded = dataclasses.replace(champion.config, data=dataclasses.replace(champion.config.data, exclude=None))
    _, fingerprint = prepare_dataset(unexcluded)
    if not cache.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            try:
                shutil.copy(mlflow.artifacts.download_artifacts(
                    run_id=champion.run_id, artifact_path=f"label_noise/{name}", dst_path=scratch), cache)
            except (mlflow.exceptions.MlflowException, OSError):
                pass  # not logged with the model yet: computed below

    def compute() -> OutOfFold:
        meta = {"model": f"{champion.name} v{champion.version}", "run_id": champion.run_id}
        return out_of_fold(champion.config, args.folds, epochs, fit_predict, meta,
                           log=lambda message: print(message, file=sys.stderr))

    oof = load_or_compute(cache, compute, fingerprint, log=lambda message: print(message, file=sys.stderr))
    if not getattr(args, "no_log", False):
        mlflow.MlflowClient().log_artifact(champion.run_id, str(cache), "label_noise")
    return oof
