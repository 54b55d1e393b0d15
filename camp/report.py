"""`camp report`: one HTML page (plus Markdown, PNGs, predictions CSVs and report.json) about a
registered model, logged as artifacts of the model's run; and `camp clean`: its suspected label
errors as an exclusion list.

Every number comes from predictions anyone can recompute: the registered model's own predictions on
the named splits (written next to the report as predictions_<split>.csv), the trials'
val_predictions.json artifacts (study comparisons), and the out-of-fold probabilities (label noise).
Sections 1-5 are in `camp.report_sections`, 6 in `camp.report_errors`; rendering is in `camp.report_html`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from camp import names
from camp.report_html import render_html, render_markdown

MODEL = "models:/camp-classifier@champion"


@dataclasses.dataclass
class Champion:
    """A registered model version, the run that trained it and the run config it was trained with."""

    name: str
    version: str
    run_id: str
    config: object  # camp.train.RunConfig
    run: object  # mlflow Run
    study: str | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def load_champion(model_uri: str, data_path: str | None = None) -> Champion:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> the version, its run and its RunConfig."""
    import mlflow
    from mlflow import MlflowClient

    from camp.registry import _run_config_from_meta

    if not model_uri.startswith("models:/"):
        raise ValueError(f"--model must look like models:/NAME@ALIAS or models:/NAME/VERSION, got {model_uri!r}")
    reference = model_uri[len("models:/"):]
    client = MlflowClient()
    try:
        if "@" in reference:
            name, alias = reference.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = reference.rsplit("/", 1)
            version = client.get_model_version(name, number)
    except mlflow.exceptions.MlflowException as error:
        raise ValueError(f"{model_uri}: no such registered model in {mlflow.get_tracking_uri()} "
                         f"(run `camp sweep` first): {error.message.splitlines()[0]}") from None
    run_id = (version.tags or {}).get(names.RUN_ID) or version.run_id
    with tempfile.TemporaryDirectory() as directory:
        meta = json.loads(Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="bundle/camp.json", dst_path=directory)).read_text())
    config = _run_config_from_meta(meta)
    if data_path:
        config = dataclasses.replace(config, data_path=data_path)
    run = client.get_run(run_id)
    return Champion(name, str(version.version), run_id, config, run, run.data.tags.get(names.STUDY))


def predict_items(predict, items, labels, split: str) -> pd.DataFrame:
    """One row per item: relpath, true and predicted label, confidence, p_<label>, error."""
    output = predict([item.path for item in items])
    frame = pd.DataFrame({"split": split, "relpath": [item.relpath for item in items],
                          "path": [item.path for item in items], "true": [labels[item.label] for item in items],
                          "predicted": list(output["label"])})
    probabilities = output[[f"p_{label}" for label in labels]].to_numpy(float)
    frame["confidence"] = np.nan_to_num(probabilities, nan=0.0).max(axis=1)
    for column, label in enumerate(labels):
        frame[f"p_{label}"] = probabilities[:, column]
    frame["error"] = list(output["error"])
    return frame


def pyfunc_predictor(model_uri: str):
    import mlflow

    model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    return model.predict_files  # the report's own files: read here, not as a client's paths


def run_predictor(run_id: str, directory: Path):
    """A trained run's bundle (model.keras + camp.json) as a predictor: the served model's own code."""
    import mlflow

    from camp.registry import CampClassifier

    bundle = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle", dst_path=str(directory))
    model = CampClassifier().load_bundle(bundle)
    return model.predict_files


def class_report(frame: pd.DataFrame, labels) -> dict:
    """scikit-learn's classification_report (as a dict) over the readable rows of a predictions frame."""
    from sklearn.metrics import classification_report

    readable = frame[frame["error"] == ""]
    y_true = [labels.index(label) for label in readable["true"]]
    y_pred = [labels.index(label) for label in readable["predicted"]]
    return classification_report(y_true, y_pred, labels=list(range(len(labels))), target_names=list(labels),
                                 output_dict=True, zero_division=0)


def find_runs(champion: Champion, matches) -> list:
    """Finished runs in the champion's experiment (newest first), on the same data, for which `matches(params)`."""
    import mlflow

    runs = mlflow.search_runs(experiment_ids=[champion.run.info.experiment_id], output_format="list",
                              filter_string="attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                              max_results=5000)
    root = os.path.realpath(champion.run.data.tags.get(names.DATA_ROOT, ""))
    out = []
    for run in runs:
        tags, params = run.data.tags, run.data.params
        if tags.get(names.ROLE) in ("sweep", "oof-fold") or "preprocess.mode" not in params:
            continue
        if run.info.run_id == champion.run_id or os.path.realpath(tags.get(names.DATA_ROOT, "?")) != root:
            continue
        if params.get("data.label_map") == champion.run.data.params.get("data.label_map") and matches(params):
            out.append(run)
    return out


def recipe_params() -> dict:
    """The params a `camp train sweeps/baseline.yaml` run logs: every knob at the recipe default."""
    from camp.model import ModelConfig
    from camp.preprocess import PreprocessConfig

    return {**{f"preprocess.{k}": str(v) for k, v in dataclasses.asdict(PreprocessConfig()).items()},
            **{f"model.{k}": str(v) for k, v in dataclasses.asdict(ModelConfig()).items()}}


def find_baseline(champion: Champion):
    recipe = recipe_params()
    found = find_runs(champion, lambda params: params.get("data.exclude", "None") == "None" and all(
        params.get(key, value) == value for key, value in recipe.items()))
    return found[0] if found else None


def find_twin(champion: Champion):
    """The newest run with the champion's knobs and seed but another `data.exclude` (with/without the list)."""
    mine = champion.run.data.params
    keys = [key for key in mine if key.startswith(("preprocess.", "model.")) or key == "seed"]
    found = find_runs(champion, lambda params: params.get("data.exclude", "None") != mine.get("data.exclude", "None")
                      and all(params.get(key) == mine[key] for key in keys))
    return found[0] if found else None


def thumbnail(path: str, directory: Path, height: int = 96) -> Path | None:
    """A small JPEG of an image under directory/thumbs (relative path returned), None if unreadable."""
    import cv2

    from camp.images import UnreadableImage, decode_path

    name = Path("thumbs") / (hashlib.blake2b(os.path.abspath(path).encode(), digest_size=8).hexdigest() + ".jpg")
    target = directory / name
    if not target.is_file():
        try:
            image = decode_path(path, 4)
        except UnreadableImage:
            return None
        width = max(1, int(round(image.shape[1] * height / image.shape[0])))
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA),
                    [cv2.IMWRITE_JPEG_QUALITY, 80])
    return name


def default_out(args, champion: Champion) -> Path:
    return Path(args.out or f"reports/{args.study or champion.study or 'champion'}")


def run_report(args, fit_predict=None) -> int:
    """The `camp report` command."""
    from mlflow import MlflowClient

    from camp import tracking
    from camp.report_sections import Context, build_sections
    from camp.train import prepare_dataset

    tracking.setup()
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
        frame.to_csv(out / f"predictions_{split}.csv", index=False)
    context = Context(champion, dataset, labels, splits, predictions, out, args, fit_predict)
    blocks = build_sections(context)
    title = f"{champion.name} v{champion.version} — camp report"
    (out / "report.md").write_text(render_markdown(title, blocks), encoding="utf-8")
    (out / "report.html").write_text(render_html(title, blocks, out), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(context.numbers, indent=2, default=_plain))
    if not args.no_log:
        MlflowClient().log_artifacts(champion.run_id, str(out), "report")
        log(f"logged {out} as artifacts report/ of run {champion.run_id}")
    print(out / "report.html")
    return 0


def run_clean(args, fit_predict=None) -> int:
    """The `camp clean` command: suspected label errors -> a reviewed-by-hand exclusion list."""
    from camp import labelnoise, tracking

    tracking.setup()
    champion = load_champion(args.model, args.data)
    oof = labelnoise.champion_oof(champion, args, default_out(args, champion), fit_predict)
    suspects = labelnoise.find_suspects(oof)
    kept = labelnoise.write_exclusion_list(suspects, Path(args.exclusions),
                                           f"{champion.name} v{champion.version}")
    print(f"camp clean: {len(suspects)} suspected label error(s) among {len(oof.relpaths)} train+validation images; "
        f"{kept} train image(s) listed for exclusion", file=sys.stderr)
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
