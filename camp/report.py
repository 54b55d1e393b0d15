"""`camp report`: one HTML page (plus Markdown, PNGs, predictions CSVs and report.json) about a
registered model, logged as artifacts of the model's run; and `camp clean`: its suspected label
errors as an exclusion list.

Every number comes from predictions anyone can recompute: the registered model's own predictions on
the named splits (written next to the report as predictions_<split>.csv), the trials'
val_predictions.json artifacts (study comparisons), and the out-of-fold probabilities (label noise).
Sections 1-5 are in `camp.report_sections`, 6 in `camp.report_errors`; rendering is in `camp.report_html`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from camp import labelnoise, tracking
from camp.report_context import Champion, Context, load_champion, predict_items, pyfunc_predictor
from camp.report_html import render_html, render_markdown
from camp.report_sections import build_sections
from camp.run_config import prepare_dataset


def default_out(args, champion: Champion) -> Path:
    return Path(args.out or f"reports/{args.study or champion.study or 'champion'}")


def run_report(args, fit_predict=None) -> int:
    """The `camp report` command."""
    from mlflow import MlflowClient


    tracking.setup(create=False)
    champion = load_champion(args.model, args.data)
    out = default_out(args, champion)
    out.mkdir(parents=True, exist_ok=True)
    dataset, _ = prepare_dataset(champion.config)
    labels = list(dataset.labels)
    splits = [split.strip() for split in args.splits.split(",") if split.strip()]
    missing = [split for split in splits if not dataset.split(split)]
    if missing:
        raise ValueError(f"--splits: the dataset has no {', '.join(missing)} split (it has {', '.join(dataset.splits)})")
    log(f"report on {champion.name} v{champion.version} (run {champion.run_id}) -> {out}")
    predict = pyfunc_predictor(champion.uri)
    predictions = {split: predict_items(predict, dataset.split(split), labels, split) for split in splits}
    for split, frame in predictions.items():
        frame.to_csv(out / f"predictions_{split}.csv", index=False, errors="backslashreplace")
    context = Context(champion, dataset, labels, splits, predictions, out, args, fit_predict)
    blocks = build_sections(context)
    title = f"{champion.name} v{champion.version} — camp report"
    (out / "report.md").write_text(render_markdown(title, blocks), encoding="utf-8", errors="backslashreplace")
    (out / "report.html").write_text(render_html(title, blocks, out), encoding="utf-8", errors="backslashreplace")
    (out / "report.json").write_text(json.dumps(context.numbers, indent=2, default=_plain))
    if not args.no_log:
        MlflowClient().log_artifacts(champion.run_id, str(out), "report")
        log(f"logged {out} as artifacts report/ of run {champion.run_id}")
    print(out / "report.html")
    return 0


def run_clean(args, fit_predict=None) -> int:
    """The `camp clean` command: suspected label errors -> a reviewed-by-hand exclusion list."""

    tracking.setup(create=False)
    champion = load_champion(args.model, args.data)
    oof = labelnoise.champion_oof(champion, args, default_out(args, champion), fit_predict)
    found = labelnoise.find_suspects(oof)
    suspects = labelnoise.review_list(found, args.review)
    kept = labelnoise.write_exclusion_list(suspects, Path(args.exclusions),
                                           f"{champion.name} v{champion.version}")
    shown = f"the {len(suspects)} most confident of " if len(suspects) < len(found) else ""
    print(f"camp clean: {shown}{len(found)} suspected label error(s) among {len(oof.relpaths)} train+validation "
          f"images (out-of-fold accuracy {oof.meta.get('oof_accuracy')}); {kept} train image(s) listed for exclusion",
          file=sys.stderr)
    if labelnoise.oof_warning(oof):
        print(f"camp clean: warning: {labelnoise.oof_warning(oof)}", file=sys.stderr)
    print(args.exclusions)
    return 0


def log(message: str) -> None:
    print(f"camp report: {message}", file=sys.stderr, flush=True)


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
