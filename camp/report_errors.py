"""Section 6 of `camp report`, error analysis: misclassified images grouped by (true, predicted),
suspected label errors from confident learning (camp.labelnoise), and, when the champion's knobs were
also trained with (or without) an exclusion list, the two models side by side on untouched splits.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from camp import labelnoise, metrics
from camp import report_context as core
from camp.data import printable
from camp.report_context import Context
from camp.report_html import Code, Gallery, Heading, Table, Text, Tile

GALLERY_GROUP = 16  # misclassified images shown per (true, predicted) pair
GALLERY_SUSPECTS = 60


def errors_section(context: Context) -> list:
    blocks = [Heading("6. Error analysis", anchor="errors"), Heading("Misclassified images", level=3)]
    frames = pd.concat([context.predictions[s] for s in context.splits])
    wrong = frames[(frames["error"] == "") & (frames["true"] != frames["predicted"])]
    pairs = wrong.groupby(["true", "predicted"]).size().sort_values(ascending=False)
    blocks.append(Text(f"{len(wrong)} of {int((frames['error'] == '').sum())} images in {', '.join(context.splits)} "
                       "are misclassified; grouped by (true, predicted), most confident first. All of them are in "
                       "predictions_<split>.csv."))
    for (true, predicted), count in pairs.items():
        group = wrong[(wrong["true"] == true) & (wrong["predicted"] == predicted)].sort_values("confidence", ascending=False)
        tiles = _tiles(context, [(row.path, [printable(Path(row.relpath).name), f"{row.split} · p={row.confidence:.2f}"])
                                 for row in group.head(GALLERY_GROUP).itertuples()])
        more = f", showing {GALLERY_GROUP}" if count > GALLERY_GROUP else ""
        blocks.append(Gallery(f"true {true} → predicted {predicted} ({count}{more})", tiles,
                              anchor=f"wrong-{true}-{predicted}"))
    context.numbers["misclassified"] = {f"{t} -> {p}": int(n) for (t, p), n in pairs.items()}
    return blocks + _label_issue_blocks(context) + _exclusion_blocks(context)


def _tiles(context: Context, entries) -> list:
    tiles = []
    for path, lines in entries:
        picture = core.thumbnail(path, context.out)
        if picture is not None:
            tiles.append(Tile(picture, lines))
    return tiles


def _label_issue_blocks(context: Context) -> list:

    args = context.args
    blocks = [Heading("Suspected label errors (confident learning)", level=3)]
    if args.folds < 2:
        return blocks + [Text("Skipped (--folds below 2).")]
    oof = labelnoise.champion_oof(context.champion, args, context.out, context.fit_predict)
    found = labelnoise.find_suspects(oof)
    suspects = labelnoise.review_list(found, args.review)
    pd.DataFrame([dataclasses.asdict(s) for s in found]).to_csv(context.out / "label_issues.csv", index=False,
                                                                            errors="backslashreplace")
    by_pair = pd.Series([f"{s.given} → {s.suggested}" for s in found]).value_counts()
    warning = labelnoise.oof_warning(oof)
    context.numbers["label_issues"] = {"count": len(found), "review": len(suspects), "pool": len(oof.relpaths),
                                       "oof_accuracy": oof.meta.get("oof_accuracy"), "warning": warning,
                                       "folds": args.folds,
                                       "epochs": oof.meta.get("epochs"), "by_pair": by_pair.to_dict(),
                                       "relpaths": [s.relpath for s in suspects]}
    blocks += [Text(f"cleanlab's `find_label_issues` on out-of-fold probabilities: {args.folds}-fold over the "
                    f"{len(oof.relpaths)} train+validation images, each fold trained with the champion's configs "
                    f"({oof.meta.get('epochs')} epochs; {oof.meta.get('classifier')}{_fold_note(oof)}; out-of-fold "
                    f"accuracy {oof.meta.get('oof_accuracy')}). **{len(found)} suspected label errors** "
                    f"({100 * len(found) / max(1, len(oof.relpaths)):.1f}%), all in label_issues.csv; the review list "
                    f"below is the {len(suspects)} most confident (`--review`). `camp clean --out sweeps/excluded.txt` "
                    "writes that list as an exclusion list.")]
    if warning:
        blocks.append(Text(f"**Warning:** {warning}."))
    blocks += [
               Table(["given → suggested", "images"], [[pair, int(n)] for pair, n in by_pair.items()], anchor="label-issue-pairs")]
    tiles = _tiles(context, [(s.path, [printable(Path(s.relpath).name), f"given {s.given}", f"suggested {s.suggested} "
                                       f"(p={s.p_suggested:.2f})", s.split]) for s in suspects[:GALLERY_SUSPECTS]])
    if tiles:
        shown = f", showing {GALLERY_SUSPECTS}" if len(suspects) > GALLERY_SUSPECTS else ""
        blocks.append(Gallery(f"suspected label errors ({len(suspects)}{shown})", tiles, anchor="label-issues"))
    return blocks


def _fold_note(oof) -> str:
    values = oof.meta.get("fold_objective")
    note = f"; the fold models' own validation objective {', '.join(f'{v:.3f}' for v in values)}" if values else ""
    accuracy = oof.meta.get("oof_accuracy")
    return note + (f"; out-of-fold accuracy against the given labels {accuracy:.3f}" if accuracy is not None else "")


def _exclusion_blocks(context: Context) -> list:
    champion, config = context.champion, context.config
    blocks = [Heading("Acting on it: training without the suspects", level=3)]
    twin = core.find_twin(champion)
    used = config.data.exclude
    if twin is None:
        exclude = None if used else "sweeps/excluded.txt"
        path = context.out / f"champion_{'without' if used else 'with'}_exclusions.yaml"
        path.write_text(yaml.safe_dump(_study_document(champion, exclude, path.stem), sort_keys=False))
        if used:
            text = (f"The champion trained without the {len(context.dataset.excluded)} images in `{used}`. No run with "
                    "its knobs and no exclusion list is in the store yet; to compare, run:")
            command = f"camp train {path}"
        else:
            text = ("The study used no exclusion list. To measure the effect of leaving the suspects out, review "
                    "the list, train the champion's knobs without them, and re-run `camp report`:")
            command = f"camp clean --out sweeps/excluded.txt\ncamp train {path}"
        return blocks + [Text(text), Code(command)]
    with tempfile.TemporaryDirectory() as directory:
        predict = core.run_predictor(twin.info.run_id, Path(directory))
        other = {split: core.predict_items(predict, context.dataset.split(split), context.labels, split)
                 for split in context.splits}
    mine_name, other_name = ("with list", "without list") if used else ("without list", "with list")
    listed = used or twin.data.params.get("data.exclude")
    rows, numbers, lines = [], {}, []
    for split in context.splits:
        frames = (context.predictions[split], other[split]) if used else (other[split], context.predictions[split])
        with_report, without_report = (core.class_report(frame, context.labels) for frame in frames)
        intervals = _difference_intervals(context, *frames)
        for metric, getter in [("accuracy", lambda r: r["accuracy"]), ("macro F1", lambda r: r["macro avg"]["f1-score"])] + [
                (f"recall {label}", lambda r, label=label: r[label]["recall"]) for label in context.labels]:
            with_list, without = getter(with_report), getter(without_report)
            low, high = intervals.get(metric, (None, None))
            rows.append([split, metric, with_list, without, with_list - without, low, high])
            numbers[f"{split}/{metric}"] = {"with": with_list, "without": without, "difference_ci95": [low, high]}
        low, high = intervals["macro F1"]
        change = with_report["macro avg"]["f1-score"] - without_report["macro avg"]["f1-score"]
        outcome = ("raised" if low > 0 else "lowered") if low > 0 or high < 0 else "did not measurably change"
        lines.append(f"**{split}**: leaving the listed images out {outcome} macro F1 ({change:+.3f}, 95% interval "
                     f"[{low:+.3f}, {high:+.3f}]).")
    context.numbers["exclusion_effect"] = {"list": listed, "twin_run": twin.info.run_id, "champion_is": mine_name,
                                           "metrics": numbers}
    return blocks + [Text(f"The champion's knobs trained {mine_name} (the champion) and {other_name} (run "
                          f"`{twin.info.run_id}`), list `{listed}`, scored on the untouched {', '.join(context.splits)} "
                          "images. Intervals: paired bootstrap of the difference over the same images. The champion "
                          "was picked as the best trial on validation, which flatters it there: test is the fairer "
                          "split, and a retrain of the same knobs also moves by a little."),
                     Table(["split", "metric", "with list", "without list", "difference", "95% low", "95% high"], rows,
                           anchor="exclusion-effect")] + [Text(line) for line in lines]


def _difference_intervals(context: Context, with_frame: pd.DataFrame, without_frame: pd.DataFrame) -> dict:
    labels = context.labels
    readable = ((with_frame["error"] == "") & (without_frame["error"] == "")).to_numpy()
    y = with_frame["true"].map(labels.index).to_numpy()[readable]
    first = with_frame["predicted"][readable].map(labels.index).to_numpy()
    second = without_frame["predicted"][readable].map(labels.index).to_numpy()
    resamples = context.args.bootstrap
    return {"accuracy": metrics.paired_bootstrap("val/accuracy", y, first, second, resamples)[1:],
            "macro F1": metrics.paired_bootstrap("val/macro_f1", y, first, second, resamples)[1:]}


def _study_document(champion: core.Champion, exclude: str | None, name: str) -> dict:
    config = champion.config
    data = {**dataclasses.asdict(config.data), "path": config.data_path or config.data.path, "exclude": exclude}
    return {"study": {"name": name, "metric": config.metric, "direction": config.direction, "n_trials": 1},
            "data": data, "seed": config.seed, "preprocess": dataclasses.asdict(config.preprocess),
            "model": _model_knobs(config.model)}


def _model_knobs(model) -> dict:
    """The model section of a study file that reproduces `model`; a default min_epochs above max_epochs
    (a short run) is left out, as a file may not ask for more epochs than max_epochs."""
    knobs = dataclasses.asdict(model)
    if knobs["min_epochs"] > knobs["max_epochs"]:
        knobs.pop("min_epochs")
    return knobs
