"""Pictures people would rather see than read: label counts, confusion matrix, preprocessing grid."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from camp.caches import atomic_path, cache_dir
from camp.data import printable
from camp.images import UnreadableImage, decode_path
from camp.preprocess import preprocess_steps


def counts_bar_chart(counts: dict[str, dict[str, int]], path: str | Path, title: str = "Images per label") -> Path:
    """Grouped bars: one group per label, one bar per split."""
    splits = list(counts)
    labels = list(next(iter(counts.values()))) if counts else []
    figure, axes = plt.subplots(figsize=(1.6 * max(len(labels), 3) + 2, 4))
    width = 0.8 / max(len(splits), 1)
    positions = np.arange(len(labels))
    for index, split in enumerate(splits):
        values = [counts[split][label] for label in labels]
        bars = axes.bar(positions + index * width, values, width, label=split)
        axes.bar_label(bars, fontsize=7)
    axes.set_xticks(positions + width * (len(splits) - 1) / 2, labels)
    axes.set_ylabel("images")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def confusion_matrix_plot(matrix: np.ndarray, labels, path: str | Path, title: str = "Confusion matrix") -> Path:
    """Counts with row-normalised colour (recall per true label)."""
    matrix = np.asarray(matrix)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(1.1 * len(labels) + 2.5, 1.0 * len(labels) + 2))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for row in range(len(labels)):
        for column in range(len(labels)):
            colour = "white" if normalised[row, column] > 0.5 else "black"
            axes.text(column, row, f"{matrix[row, column]}\n{normalised[row, column]:.0%}", ha="center",
                      va="center", fontsize=8, color=colour)
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of true label")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def preprocessing_grid(examples, labels, config, path: str | Path) -> Path:
    """Rows of (original with crop box | binarized | model input) for (label index, relpath, decoded BGR)."""
    import cv2

    rows = max(len(examples), 1)
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.3 * rows), squeeze=False)
    for row, (label, relpath, decoded) in enumerate(examples):
        steps = preprocess_steps(decoded, config)
        x, y, width, height = steps.box
        original = cv2.cvtColor(steps.working, cv2.COLOR_BGR2RGB).copy()
        thickness = max(2, original.shape[1] // 100)
        cv2.rectangle(original, (x, y), (x + width - 1, y + height - 1), (255, 0, 0), thickness)
        output = steps.output[:, :, 0] if steps.output.shape[2] == 1 else steps.output
        panels = [(original, None, f"{labels[label]}  box {width * height / (original.shape[0] * original.shape[1]):.0%}"),
                  (steps.binary, "gray", "binarized"),
                  (output, "gray" if output.ndim == 2 else None, f"input {config.mode} {config.size}x{config.size}")]
        for column, (picture, cmap, title) in enumerate(panels):
            axes[row][column].imshow(picture, cmap=cmap, vmin=0, vmax=255)
            axes[row][column].set_title(title, fontsize=8)
            axes[row][column].axis("off")
        axes[row][0].text(0, -0.02, printable(Path(relpath).name)[:24], transform=axes[row][0].transAxes, fontsize=6, va="top")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return Path(path)


GRID_VERSION = 1  # bump when preprocessing_grid draws differently: cached grids are keyed by it


def grid_key(preprocess_key: str, labels, seed: int) -> str:
    """What a preprocessing grid depends on: the preprocessed data (config and dataset), labels and seed."""
    payload = json.dumps({"arrays": preprocess_key, "labels": list(labels), "seed": seed, "grid": GRID_VERSION})
    return hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()


def cached_picture(path: str | Path, key: str, draw: Callable[[Path], Path]) -> Path:
    """`path`, drawn by `draw(path)` the first time `key` is seen and copied from $CAMP_CACHE/pictures after.
    Trials that share their preprocessing share its grid: drawing it (~2 s of matplotlib) cost more than
    fitting a HOG trial. A cache that cannot be written (full disk, read-only) costs only the redraw."""
    path = Path(path)
    stored = cache_dir() / "pictures" / f"{key}{path.suffix}"
    if stored.is_file() and stored.stat().st_size:
        try:
            shutil.copyfile(stored, path)
            return path
        except OSError:
            pass  # unreadable entry: draw it again
    draw(path)
    try:
        stored.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(stored) as temporary:
            shutil.copyfile(path, temporary)
    except OSError as error:
        print(f"warning: could not cache the picture {stored} ({error.strerror or error})", file=sys.stderr)
    return path


def shared_preprocessing_grid(items, labels, config, seed: int, data_fingerprint: str, path: str | Path) -> Path:
    """A run's preprocessing grid at `path`: two seeded examples per label, drawn once per preprocessing,
    data, labels and seed (`cached_picture`), so the trials of a sweep that share their preprocessing share it."""
    def draw(target: Path) -> Path:
        examples = pick_examples(items, labels, config.decode_reduction, per_label=2, seed=seed)
        return preprocessing_grid(examples, labels, config, target)

    return cached_picture(path, grid_key(config.cache_key(data_fingerprint), labels, seed), draw)


def pick_examples(items, labels, reduction: int, per_label: int = 2, seed: int = 0):
    """A few (label, relpath, decoded BGR) per label, seeded: the first readable items of a seeded
    shuffle. Decodes only the images it returns (and any unreadable ones it passes over)."""

    rng = np.random.default_rng(seed)
    examples = []
    for label in range(len(labels)):
        candidates = [item for item in items if item.label == label]
        found = 0
        for index in rng.permutation(len(candidates)):
            if found == per_label:
                break
            try:
                decoded = decode_path(candidates[index].path, reduction)
            except UnreadableImage:
                continue
            examples.append((label, candidates[index].relpath, decoded))
            found += 1
    return examples


def ablation_plot(results: list[dict], path: str | Path) -> Path:
    """One panel per ablated knob: each value's score per seed (dots) and its mean (bar)."""
    figure, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results) + 1, 3.4), squeeze=False)
    for panel, result in zip(axes[0], results):
        prefix = result["column"]  # the verdict split's column in each row
        rows = [row for row in result["rows"] if row[prefix] is not None]
        positions = np.arange(len(rows))
        panel.bar(positions, [row[prefix] for row in rows], color="#9ecae1", width=0.6)
        for position, row in zip(positions, rows):
            seeds = row[f"{prefix}_per_seed"]
            panel.scatter([position] * len(seeds), seeds, color="#08519c", zorder=3, s=18)
        panel.set_xticks(positions, [str(row["value"]) for row in rows])
        low = min((min(row[f"{prefix}_per_seed"]) for row in rows), default=0.0)
        panel.set_ylim(max(0.0, low - 0.1), min(1.0, max((row[prefix] for row in rows), default=1.0) + 0.05))
        panel.set_title(result["knob"], fontsize=10)
        panel.set_ylabel(result["metric"])
    figure.suptitle("ablation: mean over seeds (bars), each seed (dots)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def precision_recall_plot(y_true: np.ndarray, probabilities: np.ndarray, labels, path: str | Path,
                          title: str = "Precision-recall per label") -> Path:
    """One-vs-rest precision-recall curve per label, average precision in the legend."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for index, label in enumerate(labels):
        truth = np.asarray(y_true) == index
        if not truth.any():
            continue
        precision, recall, _ = precision_recall_curve(truth, probabilities[:, index])
        axes.plot(recall, precision, label=f"{label} (AP {average_precision_score(truth, probabilities[:, index]):.2f})")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_title(title)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
