"""The `camp` command line: data summary, preprocess show, train, sweep, ablate, predict, report, clean."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _data_summary(args) -> int:
    from camp import caches, data, plots  # per command: this one needs no MLflow/TensorFlow start-up

    root = data.resolve_data_path(args.data)
    dataset = data.load_dataset(root, args.label_map, seed=args.seed)
    digests = {item.relpath: data.file_digest(item.path) for item in dataset.items}  # one read serves both uses
    fingerprint = data.fingerprint(dataset.items, [digests[item.relpath] for item in dataset.items])
    _, skipped = caches.load_decoded(dataset.items, fingerprint, 2, progress=not args.json)
    skipped_items = [item for item in dataset.items if item.relpath in skipped]
    readable = [item for item in dataset.items if item.relpath not in skipped]
    dataset_readable = data.Dataset(dataset.root, dataset.labels, readable, dataset.dropped, dataset.drop_reasons)
    counts = dataset_readable.counts()
    skipped_counts: dict = {}
    for item in skipped_items:
        skipped_counts.setdefault(item.split, {}).setdefault(dataset.labels[item.label], 0)
        skipped_counts[item.split][dataset.labels[item.label]] += 1
    leaks = data.duplicates_across_splits(readable, [digests[item.relpath] for item in readable])
    summary = {"root": str(root), "label_map": args.label_map, "fingerprint": fingerprint, "splits": counts,
               "skipped": {"count": len(skipped), "by_split": skipped_counts, "files": skipped},
               "dropped": {source: {"count": count, "reason": dataset.drop_reasons[source]}
                           for source, count in dataset.dropped.items()},
               "validation_derived": dataset.derived_validation,
               "duplicates_across_splits": leaks}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chart = plots.counts_bar_chart(counts, out / "label_counts.png", f"Images per label ({args.label_map})")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    labels = list(dataset.labels)
    width = max(len(label) for label in labels + ["label"]) + 2
    print(f"dataset {root} (label map {args.label_map}, fingerprint {fingerprint})")
    print("label".ljust(width) + "".join(split.rjust(12) for split in counts))
    for label in labels:
        print(label.ljust(width) + "".join(str(counts[split][label]).rjust(12) for split in counts))
    print("total".ljust(width) + "".join(str(sum(counts[split].values())).rjust(12) for split in counts))
    for source, info in summary["dropped"].items():
        print(f"left out: {info['count']} '{source}' images ({info['reason']})")
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable file(s):", file=sys.stderr)
        for _relpath, reason in list(skipped.items())[:20]:
            print(f"  {reason}", file=sys.stderr)
    if leaks:
        print(f"warning: {len(leaks)} identical file(s) appear in more than one split (leakage): {leaks[:5]}", file=sys.stderr)
    if dataset.derived_validation:
        print("no validation split on disk: a seeded, stratified one was carved from train")
    print(f"bar chart: {chart}")
    return 0


def _preprocess_show(args) -> int:
    from camp import config as config_module  # per command (as below): no MLflow/TensorFlow start-up here
    from camp import plots  # per command
    from camp.run_config import fixed_run_config, prepare_dataset  # per command

    study_file = config_module.load_study_file(args.config)
    run_config = fixed_run_config(study_file, args.data)
    dataset, _ = prepare_dataset(run_config)
    examples = plots.pick_examples(dataset.items, dataset.labels, run_config.preprocess.decode_reduction,
                                   args.per_label, run_config.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots.preprocessing_grid(examples, dataset.labels, run_config.preprocess, out)
    print(f"preprocessing grid: {out}")
    return 0


def _train(args) -> int:
    from camp import config as config_module  # per command: MLflow and TensorFlow load only for those that train
    from camp.registry import log_pyfunc_for_run  # per command
    from camp.run_config import fixed_run_config  # per command
    from camp.train import train  # per command

    study_file = config_module.load_study_file(args.config)
    run_config = fixed_run_config(study_file, args.data)
    result = train(run_config, run_name=args.run_name or study_file.study.name)
    log_pyfunc_for_run(result.run_id)  # train() trains and logs its bundle; the served model is logged here
    print(json.dumps({"run_id": result.run_id, run_config.metric: round(result.value, 4),
                      "val/accuracy": round(result.metrics["val/accuracy"], 4), "best_epoch": result.best_epoch + 1,
                      "epochs": result.epochs_run, "seconds": round(result.seconds, 1),
                      "recall": {label: round(result.metrics[f"val/recall/{label}"], 3) for label in result.labels}}))
    return 0


def _sweep(args) -> int:
    from camp.sweep import run_sweep  # per command: MLflow, Optuna and TensorFlow load only for a sweep

    return run_sweep(args)


def _ablate(args) -> int:
    from camp.ablate import run_ablate  # per command: MLflow, Optuna and TensorFlow load only for an ablation

    return run_ablate(args)


def _predict(args) -> int:
    import mlflow

    from camp import tracking  # per command: MLflow loads only for the commands that need it

    tracking.setup(create=False)
    # local files, read by this (trusted) process: the served model itself refuses client-named paths
    model = mlflow.pyfunc.load_model(args.model).unwrap_python_model()
    output = model.predict_files([str(path) for path in args.images])
    failed = 0
    for path, (_, row) in zip(args.images, output.iterrows()):
        record = {"path": str(path), "label": row["label"] or None,
                  "probabilities": {c[2:]: (None if row[c] != row[c] else round(float(row[c]), 4))
                                    for c in output.columns if c.startswith("p_")}}
        if row["error"]:
            record["error"] = row["error"]
            failed += 1
        print(json.dumps(record))
    return 1 if failed else 0


def _report(args) -> int:
    from camp.report import run_report  # per command: the report stack (MLflow, matplotlib) loads only here

    return run_report(args)


def _clean(args) -> int:
    from camp.report import run_clean  # per command: as for report

    return run_clean(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="camp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data_parser = commands.add_parser("data", help="dataset commands")
    data_commands = data_parser.add_subparsers(dest="data_command", required=True)
    summary = data_commands.add_parser("summary", help="labels and image counts per split (table, JSON, PNG)")
    summary.add_argument("--data", help="dataset folder or manifest CSV (default: $CAMP_DATA or data/clothing-small)")
    summary.add_argument("--label-map", default="camp5", help="label map name or YAML path (default camp5)")
    summary.add_argument("--seed", type=int, default=42, help="seed for a derived validation split")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.add_argument("--out", default="reports/data", help="where summary.json and label_counts.png go")
    summary.set_defaults(handler=_data_summary)

    pre_parser = commands.add_parser("preprocess", help="preprocessing commands")
    pre_commands = pre_parser.add_subparsers(dest="preprocess_command", required=True)
    show = pre_commands.add_parser("show", help="PNG grid: original with crop box, binarized, model input")
    show.add_argument("--config", default="sweeps/baseline.yaml", help="study file with fixed preprocess knobs")
    show.add_argument("--data", help="dataset folder or manifest CSV (default: the study file's data.path, $CAMP_DATA, data/clothing-small)")
    show.add_argument("--per-label", type=int, default=3)
    show.add_argument("--out", default="reports/preprocessing.png")
    show.set_defaults(handler=_preprocess_show)

    train_parser = commands.add_parser("train", help="one tracked training run from a study file with fixed knobs")
    train_parser.add_argument("config", help="study file, e.g. sweeps/baseline.yaml")
    train_parser.add_argument("--data", help="dataset folder or manifest CSV (default: the study file's data.path, $CAMP_DATA, data/clothing-small)")
    train_parser.add_argument("--run-name")
    train_parser.set_defaults(handler=_train)

    sweep_parser = commands.add_parser("sweep", help="an Optuna study; every trial an MLflow run; best registered")
    sweep_parser.add_argument("config", help="study file, e.g. sweeps/default.yaml")
    sweep_parser.add_argument("--n-trials", type=int, help="total finished trials the study should reach")
    sweep_parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    sweep_parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    sweep_parser.add_argument("--storage", help="Optuna storage URL (default: journal file under mlruns/)")
    sweep_parser.add_argument("--data", help="dataset folder or manifest CSV (default: the study file's data.path, $CAMP_DATA, data/clothing-small)")
    sweep_parser.add_argument("--seed", type=int, help="override the study file's seed and sampler seed (repeat a "
                              "study under other seeds)")
    sweep_parser.add_argument("--no-register", action="store_true", help="do not register the best trial")
    sweep_parser.add_argument("--worker-of", help=argparse.SUPPRESS)  # parent MLflow run id, for worker processes
    sweep_parser.add_argument("--queued-only", action="store_true", help=argparse.SUPPRESS)  # the refit phase's workers
    sweep_parser.set_defaults(handler=_sweep)

    ablate_parser = commands.add_parser("ablate", help="controlled experiment: each --vary knob's values in turn, every "
                                        "other knob at the base, seeds x values; verdicts with intervals")
    ablate_parser.add_argument("--base", default="champion", help="champion (default), models:/NAME@ALIAS, "
                               "models:/NAME/VERSION, runs:/RUN_ID, or a study file with fixed knobs; an ensemble "
                               "stands in by its heaviest member")
    ablate_parser.add_argument("--vary", action="append", default=[], metavar="KNOB=V1,V2[,...]",
                               help="a knob and the values to compare, e.g. preprocess.mode=gray,color (repeatable)")
    ablate_parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                               help="hold a knob at this value in every cell, e.g. model.max_epochs=10 (repeatable)")
    ablate_parser.add_argument("--missions", action="store_true", help="the camp's three questions: mode, crop "
                               "method, loss weighting, with --set preprocess.size=32 model.max_epochs=10 --seeds 2")
    ablate_parser.add_argument("--seeds", type=int, help="trainings per value (model.replica 0..N-1; default 2)")
    ablate_parser.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    ablate_parser.add_argument("--storage", help="Optuna storage URL (default: journal file under mlruns/)")
    ablate_parser.add_argument("--data", help="dataset folder or manifest CSV (default: the base's)")
    ablate_parser.add_argument("--name", help="study name (default: ablate-<hash of base, knobs and seeds>)")
    ablate_parser.add_argument("--split", default="test", help="split the verdicts are computed on (default test)")
    ablate_parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals")
    ablate_parser.add_argument("--out", help="result folder (default reports/ablations/<name>)")
    ablate_parser.set_defaults(handler=_ablate)

    predict_parser = commands.add_parser("predict", help="classify image files with a registered model")
    predict_parser.add_argument("images", nargs="+", type=Path)
    predict_parser.add_argument("--model", default="models:/camp-classifier@champion")
    predict_parser.set_defaults(handler=_predict)

    report_parser = commands.add_parser("report", help="HTML+Markdown report on a registered model, logged with its run")
    clean_parser = commands.add_parser("clean", help="suspected label errors as an exclusion list for data.exclude")
    for sub in (report_parser, clean_parser):
        sub.add_argument("--model", default="models:/camp-classifier@champion")
        sub.add_argument("--study", help="Optuna study name (default: the model's run tag optuna.study)")
        sub.add_argument("--data", help="dataset folder or manifest, if not where the model was trained")
        sub.add_argument("--folds", type=int, default=3, help="k of the out-of-fold label-noise search (0: skip)")
        sub.add_argument("--oof-epochs", type=int, help="epoch cap for each fold's model (default: the model's own)")
        sub.add_argument("--review", type=int, default=50,
                         help="how many suspected label errors to list for review, most confident first (0: all)")
    report_parser.add_argument("--out", help="report folder (default reports/<study>)")
    report_parser.add_argument("--storage", help="Optuna storage URL (default: mlruns/optuna.journal)")
    report_parser.add_argument("--splits", default="validation,test", help="comma-separated splits to score")
    report_parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals")
    report_parser.add_argument("--no-log", action="store_true", help="do not log the report with the model's run")
    report_parser.set_defaults(handler=_report)
    clean_parser.add_argument("--out", dest="exclusions", default="sweeps/excluded.txt", help="list to write")
    clean_parser.add_argument("--report-dir", dest="out", help="where the label-noise cache is (default reports/<study>)")
    clean_parser.set_defaults(handler=_clean)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"camp: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("camp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
