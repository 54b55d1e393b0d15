"""How well does camp's label-issue search find real mislabeled photos? Flip the labels of a seeded sample of
clothing-small's train images (through a CSV manifest: no image is copied or changed), run the same
out-of-fold search `camp report` and `camp clean` run, and score the review list: precision and recall of
the flipped images among the top N suspects, and over all suspects. Prints one JSON object.

    .venv/bin/python bench/label_noise.py [--data ../shared/datasets/clothing-small] [--flips 30] [--top 50]

The fold models are HOG + logistic regression (`--classifier hog`, seconds per fold) or camp's CNN with
the study file's knobs (`--classifier cnn --config sweeps/baseline.yaml`, minutes per fold). Recall is
bounded by the photos that were mislabeled before the flips: they are found too, and count as misses here.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "clothing-small"


def flipped_manifest(root: Path, directory: Path, flips: int, seed: int) -> tuple[Path, set[str]]:
    """A manifest of root's train and validation images where `flips` train images carry the source class of
    another camp label; returns it and the flipped images' absolute paths."""
    from camp.data import load_dataset, load_label_map

    label_map = load_label_map("camp5")
    dataset = load_dataset(root, "camp5")
    sources = sorted(label_map.mapping)
    rng = np.random.default_rng(seed)
    train = [item for item in dataset.items if item.split == "train"]
    chosen = {str(Path(train[index].path).resolve()) for index in rng.choice(len(train), flips, replace=False)}
    manifest = directory / "flipped.csv"
    with manifest.open("w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for item in dataset.items:
            if item.split not in ("train", "validation"):
                continue
            source = item.source
            if str(Path(item.path).resolve()) in chosen:
                others = [s for s in sources if label_map.mapping[s] != label_map.mapping[item.source]]
                source = others[int(rng.integers(len(others)))]
            writer.writerow([str(Path(item.path).resolve()), source, item.split])
    return manifest, chosen


def hog_fit_predict(x_train, y_train, x_test, n_classes):
    """HOG + logistic regression (camp's classical family at its defaults) as the fold model."""
    from camp.classical import fit_hog_linear
    from camp.model import ModelConfig

    return fit_hog_linear(x_train, y_train, n_classes, ModelConfig(family="hog_linear"), 0).predict(x_test)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--flips", type=int, default=30)
    parser.add_argument("--top", type=int, default=50, help="size of the review list scored")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier", choices=("hog", "cnn"), default="hog")
    parser.add_argument("--config", default="sweeps/baseline.yaml", help="the CNN's knobs (--classifier cnn)")
    args = parser.parse_args()

    from camp import labelnoise
    from camp.config import load_study_file
    from camp.preprocess import PreprocessConfig
    from camp.run_config import RunConfig, fixed_run_config

    started = time.time()
    with tempfile.TemporaryDirectory() as directory:
        manifest, flipped = flipped_manifest(Path(args.data), Path(directory), args.flips, args.seed)
        if args.classifier == "cnn":
            config = fixed_run_config(load_study_file(args.config), data_path=str(manifest))
            fit_predict = None
        else:
            config = RunConfig(preprocess=PreprocessConfig(crop_method="none", mode="gray", size=64),
                               data_path=str(manifest), seed=args.seed)
            fit_predict = hog_fit_predict
        oof = labelnoise.out_of_fold(config, folds=args.folds, fit_predict=fit_predict, log=lambda *_: None)
    suspects = labelnoise.find_suspects(oof)
    top = labelnoise.review_list(suspects, args.top)
    hits_top = sum(str(Path(s.path).resolve()) in flipped for s in top)
    hits_all = sum(str(Path(s.path).resolve()) in flipped for s in suspects)
    print(json.dumps({
        "data": args.data, "flips": args.flips, "seed": args.seed, "classifier": args.classifier, "folds": args.folds,
        "pool": len(oof.relpaths), "oof_accuracy": oof.meta.get("oof_accuracy"), "warning": labelnoise.oof_warning(oof),
        "suspects": len(suspects), "top": args.top,
        "precision_at_top": round(hits_top / max(1, len(top)), 3), "recall_at_top": round(hits_top / args.flips, 3),
        "precision_all": round(hits_all / max(1, len(suspects)), 3), "recall_all": round(hits_all / args.flips, 3),
        "seconds": round(time.time() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
