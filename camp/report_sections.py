"""Sections 1-5 of `camp report`, one per mission (3, colour vs gray vs binary, is in camp.report_modes; 6,
error analysis, in camp.report_errors); each returns blocks and records its numbers in `context.numbers`
(written as report.json).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from camp import names
from camp import report_context as core
from camp.model import ModelConfig
from camp.plots import confusion_matrix_plot, counts_bar_chart, pick_examples, preprocessing_grid
from camp.preprocess import PreprocessConfig
from camp.report_ablation import ablation_blocks
from camp.report_context import Context
from camp.report_errors import errors_section
from camp.report_finalists import finalists_blocks, floor_verdict
from camp.report_html import Code, Heading, Picture, Row, Table, Text
from camp.report_modes import best_by, modes_section
from camp.study_plots import save_png

WEIGHTINGS = ("none", "balanced", "focal")


def build_sections(context: Context) -> list:
    champion, config = context.champion, context.config
    tags = champion.run.data.tags
    blocks = [Text(f"Model `{champion.uri}` (run `{champion.run_id}`, study `{champion.study or '-'}`), trained on "
                   f"`{tags.get('camp.data_root', '?')}` (data fingerprint `{tags.get('camp.data_fingerprint', '?')}`), "
                   f"objective `{config.metric}` ({config.direction}). Evaluated on: {', '.join(context.splits)}. "
                   "Every number below is recomputable: the model's predictions are in `predictions_<split>.csv`, "
                   "the trials' validation predictions in `trials/<run id>.json` (their `val_predictions.json` "
                   "artifact, or their bundle re-run), the numbers in `report.json`.")]
    split = "validation" if "validation" in context.predictions else next(iter(context.predictions))
    verdict, context.numbers["floors"] = floor_verdict(context.predictions[split], context.labels, split,
                                                       context.args.bootstrap)
    blocks.append(Text(verdict))
    for section in (counts_section, preprocessing_section, modes_section, per_label_section, sweep_section,
                    errors_section):
        blocks += section(context)
    return blocks


# 1. labels and counts ---------------------------------------------------------------------------

def _skipped_in_training(context: Context) -> dict[str, str]:
    """{relpath: reason} of the train/validation files the champion's run could not read (its
    skipped_images.json; an ensemble's from its members' runs)."""
    import mlflow

    tags = context.champion.run.data.tags
    runs = [context.champion.run_id] + [run for run in tags.get(names.MEMBERS, "").split(",") if run]
    skipped: dict[str, str] = {}
    for run_id in runs:
        try:
            skipped.update(mlflow.artifacts.load_dict(f"runs:/{run_id}/skipped_images.json"))
        except Exception:  # noqa: BLE001 - a run that skipped nothing logs no such file
            continue
    return skipped


def counts_section(context: Context) -> list:
    skipped = _skipped_in_training(context)
    unreadable = {item.relpath for item in context.dataset.items if item.relpath in skipped}
    counts = context.dataset.counts()
    for item in context.dataset.items:  # counted are the images training could read
        if item.relpath in unreadable:
            counts[item.split][context.labels[item.label]] -= 1
    for split, frame in context.predictions.items():  # the report's predictions name the other splits' ones
        if split not in ("train", "validation"):
            for label in counts.get(split, {}):
                counts[split][label] -= int(((frame["error"] != "") & (frame["true"] == label)).sum())
    labels = context.labels
    chart = counts_bar_chart(counts, context.out / "label_counts.png", "Images per label and split")
    ratios = {split: {label: (n / max(1, min(c.values()))) for label, n in c.items()} for split, c in counts.items()}
    rows = [[label, *[counts[s][label] for s in counts], f"{ratios.get('train', {}).get(label, 0):.1f} : 1"]
            for label in labels]
    rows.append(["total", *[sum(counts[s].values()) for s in counts], ""])
    blocks = [Heading("1. Labels and counts per split", anchor="counts"),
              Table(["label", *counts, "train ratio to smallest"], rows, anchor="counts-table"),
              Picture(Path(chart.name), "Images per label and split")]
    for split, split_counts in counts.items():
        big, small = max(split_counts, key=split_counts.get), min(split_counts, key=split_counts.get)
        if split_counts[big] == split_counts[small]:
            blocks.append(Text(f"**{split}**: balanced, {split_counts[big]} images per label."))
            continue
        blocks.append(Text(f"**{split}**: {big} outnumbers {small} {split_counts[big] / max(1, split_counts[small]):.1f} : 1 "
                           f"({split_counts[big]} vs {split_counts[small]}); relative to the smallest label, "
                           + " : ".join(f"{label} {ratios[split][label]:.1f}" for label in labels) + "."))
    notes = []
    if context.config.data.max_per_class:
        notes.append(f"`data.max_per_class: {context.config.data.max_per_class}` caps every split, validation and test "
                     "included: the counts above are after the cap, and the scores below are on those images only.")
    if context.dataset.excluded:
        notes.append(f"{len(context.dataset.excluded)} train image(s) left out by `data.exclude` "
                     f"({context.config.data.exclude}); the train counts are after that.")
    if unreadable:
        example = sorted(unreadable)[0]
        notes.append(f"{len(unreadable)} train/validation file(s) could not be read and are not counted above, e.g. "
                     f"`{example}` ({skipped[example]}); the full list is the run's `skipped_images.json`.")
    for split, frame in context.predictions.items():
        failed = int((frame["error"] != "").sum())
        if failed and split not in ("train", "validation"):
            notes.append(f"{failed} {split} image(s) could not be read and are not scored (or counted above).")
    blocks += [Text(note) for note in notes]
    context.numbers["counts"] = counts
    context.numbers["imbalance_to_smallest"] = ratios
    return blocks


# 2. preprocessing -------------------------------------------------------------------------------

def preprocessing_section(context: Context) -> list:

    config = context.config
    pool = context.dataset.split("validation") or context.dataset.items
    examples = pick_examples(pool, context.labels, config.preprocess.decode_reduction, per_label=2, seed=config.seed)
    grid = preprocessing_grid(examples, context.labels, config.preprocess, context.out / "preprocessing.png")
    rows = []
    for section, champion, recipe in (("preprocess", config.preprocess, PreprocessConfig()),
                                      ("model", config.model, ModelConfig())):
        for field in dataclasses.fields(recipe):
            mine, default = getattr(champion, field.name), getattr(recipe, field.name)
            rows.append([f"{section}.{field.name}", _knob(mine), _knob(default), "**changed**" if mine != default else ""])
    return [Heading("2. Preprocessing", anchor="preprocessing"),
            Text("Two validation images per label through the champion's own pipeline: the working image with "
                 "the crop box, the binarized image the recipe finds the box on, and the model input."),
            Row([Picture(Path(grid.name), "original with crop box | binarized | model input (champion's knobs)", 600),
                 Table(["knob", "champion", "recipe default", ""], rows, anchor="knobs", caption="Champion vs recipe")]),
            *ablation_blocks(context, "preprocess.crop_method", secondary=False)]  # does the crop help?


def _knob(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# 4. per-label accuracy --------------------------------------------------------------------------

def report_table(report: dict, labels, anchor: str, caption: str) -> Table:
    """scikit-learn's classification_report layout: per label, accuracy, macro avg, weighted avg."""
    rows = [[label, report[label]["precision"], report[label]["recall"], report[label]["f1-score"],
             int(report[label]["support"])] for label in labels]
    total = int(report["macro avg"]["support"])
    rows.append(["accuracy", None, None, report["accuracy"], total])
    for average in ("macro avg", "weighted avg"):
        rows.append([average, report[average]["precision"], report[average]["recall"], report[average]["f1-score"],
                     int(report[average]["support"])])
    return Table(["", "precision", "recall", "f1-score", "support"], rows, anchor=anchor, caption=caption)


def baseline_command(context: Context) -> str:
    data = f" --data {context.config.data_path}" if context.config.data_path else ""
    return f"camp train sweeps/baseline.yaml{data}"


def per_label_section(context: Context) -> list:
    labels = context.labels
    blocks = [Heading("4. Per-label accuracy", anchor="per-label")]
    baseline = core.find_baseline(context.champion)
    baseline_predictions = {}
    if baseline is None:
        blocks += [Text("**No recipe baseline run** (every knob at the recipe default, no exclusion list, same data) "
                        "is in this MLflow store, so only the champion's numbers are shown. Create one and re-run "
                        "`camp report`:"), Code(baseline_command(context))]
    else:
        blocks.append(Text(f"Recipe baseline: run `{baseline.info.run_id}` (`{baseline.info.run_name}`), the newest "
                           "finished run with every knob at the recipe default, evaluated on the same images."))
        with tempfile.TemporaryDirectory() as directory:
            predict = core.run_predictor(baseline.info.run_id, Path(directory))
            for split in context.splits:
                baseline_predictions[split] = core.predict_items(predict, context.dataset.split(split), labels, split)
                baseline_predictions[split].to_csv(context.out / f"baseline_predictions_{split}.csv", index=False,
                                                   errors="backslashreplace")
    context.numbers["per_label"] = {}
    for split in context.splits:
        frame = context.predictions[split]
        report = core.class_report(frame, labels)
        context.numbers["per_label"][split] = {"champion": report}
        tables = [report_table(report, labels, f"per-label-{split}", f"{split}: champion")]
        pictures = [_confusion(frame, labels, context.out / f"confusion_{split}.png", f"{split}: champion")]
        if split in baseline_predictions:
            other = core.class_report(baseline_predictions[split], labels)
            context.numbers["per_label"][split]["baseline"] = other
            tables.append(report_table(other, labels, f"per-label-{split}-baseline", f"{split}: recipe baseline"))
            pictures.append(_confusion(baseline_predictions[split], labels,
                                       context.out / f"confusion_{split}_baseline.png", f"{split}: recipe baseline"))
        blocks += [Heading(f"{split}", level=3), Row(tables), Row(pictures)]
    return blocks


def _confusion(frame: pd.DataFrame, labels, path: Path, title: str) -> Picture:
    from sklearn.metrics import confusion_matrix

    readable = frame[frame["error"] == ""]
    matrix = confusion_matrix(readable["true"], readable["predicted"], labels=labels)
    confusion_matrix_plot(matrix, labels, path, f"Confusion matrix — {title}")
    return Picture(Path(path.name), f"confusion matrix, {title}", 520)


# 5. the sweep -----------------------------------------------------------------------------------

def sweep_section(context: Context) -> list:
    blocks = [Heading("5. How the sweep raised accuracy", anchor="sweep")]
    study, trials = context.study()
    if study is None:
        return blocks + [Text(f"No study: {trials}.")]
    import optuna

    states = [t.state for t in study.trials]
    maximize = context.config.direction == "maximize"
    ordered = sorted(trials, key=lambda t: t["number"])
    first, best = (ordered[0], (max if maximize else min)(trials, key=lambda t: t["value"])) if trials else (None, None)
    if best:
        blocks.append(Text(f"Study `{study.study_name}`: {len(states)} trials ({states.count(optuna.trial.TrialState.COMPLETE)} "
                           f"complete, {states.count(optuna.trial.TrialState.PRUNED)} pruned, "
                           f"{states.count(optuna.trial.TrialState.FAIL)} failed). The first complete trial (#{first['number']}) "
                           f"scored {first['value']:.3f}; the best (#{best['number']}) {best['value']:.3f}."))
    for name, title in (("optimization_history", "optimization history"), ("param_importances", "parameter importances")):
        drawn = _study_plot(study, name, context.out / f"{name}.png")
        blocks.append(Picture(Path(drawn.name), title, 900) if isinstance(drawn, Path) else Text(f"{title}: not drawn ({drawn})."))
    blocks += _weighting_blocks(context, trials, maximize)
    return blocks + finalists_blocks(context)


def small_labels(context: Context) -> list:
    """Labels with fewer than half the training images of the largest label."""
    train = context.dataset.counts().get("train", {})
    largest = max(train.values(), default=0)
    return [label for label in context.labels if train.get(label, 0) < 0.5 * largest]


def _weighting_blocks(context: Context, trials: list, maximize: bool) -> list:
    from sklearn.metrics import recall_score

    labels, small = context.labels, small_labels(context)
    best = best_by(trials, "model.loss_weighting", WEIGHTINGS, maximize)
    rows, numbers = [], {}
    for weighting, trial in best.items():
        p = context.trial_predictions(trial["run_id"])
        recalls = recall_score(p["y_true"], p["y_pred"], labels=list(range(len(labels))), average=None, zero_division=0)
        small_mean = float(np.mean([recalls[labels.index(label)] for label in small])) if small else None
        numbers[weighting] = {"trial": trial["number"], "objective": trial["value"], "small_mean_recall": small_mean,
                              "recall": dict(zip(labels, map(float, recalls)))}
        rows.append([weighting, f"#{trial['number']}", float(trial["value"]), *map(float, recalls), small_mean])
    context.numbers["loss_weighting"] = numbers
    names = [f"{label} (small)" if label in small else label for label in labels]
    text = (f"Small classes (under half the training images of the largest): {', '.join(small)}." if small
            else "No label has under half the training images of the largest; all recalls shown.")
    return [Heading("Loss weighting and the small classes' recall", level=3),
            *ablation_blocks(context, "model.loss_weighting"),
            Text("The best complete trial of each loss weighting; validation recall per label from its "
                 f"validation predictions. {text}"),
            Table(["loss weighting", "best trial", "objective", *[f"recall {n}" for n in names], "mean recall, small"],
                  rows, anchor="loss-weighting")]


def _study_plot(study, name: str, path: Path):
    from optuna.visualization import matplotlib as optuna_plots

    return save_png(lambda: getattr(optuna_plots, f"plot_{name}")(study), path, size=(10, 5), dpi=90)
