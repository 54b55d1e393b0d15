"""What `camp report` is built from: the champion (its registered version, run and config), its and the
trials' predictions, the runs it is compared with, thumbnails, and the `Context` every section reads."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from camp import names
from camp.images import UnreadableImage, decode_path
from camp.model import ModelConfig
from camp.preprocess import PreprocessConfig
from camp.registry import CampClassifier, resolve_version
from camp.run_config import run_config_from_meta
from camp.storage import DEFAULT_JOURNAL, make_storage


@dataclasses.dataclass
class Champion:
    """A registered model version, the run that trained it and the run config it was trained with."""

    name: str
    version: str
    run_id: str
    config: object  # camp.train.RunConfig
    run: object  # mlflow Run
    study: str | None
    version_tags: dict = dataclasses.field(default_factory=dict)  # the registered version's (camp.heldout_value, ...)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def load_champion(model_uri: str, data_path: str | None = None) -> Champion:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> the version, its run and its RunConfig."""
    import mlflow
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/"):
        raise ValueError(f"--model must look like models:/NAME@ALIAS or models:/NAME/VERSION, got {model_uri!r}")
    client = MlflowClient()
    version = resolve_version(model_uri)
    name = version.name
    run_id = (version.tags or {}).get(names.RUN_ID) or version.run_id
    with tempfile.TemporaryDirectory() as directory:
        meta = json.loads(Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="bundle/camp.json", dst_path=directory)).read_text())
    config = run_config_from_meta(meta)
    if data_path:
        config = dataclasses.replace(config, data_path=data_path)
    run = client.get_run(run_id)
    return Champion(name, str(version.version), run_id, config, run, run.data.tags.get(names.STUDY),
                    dict(version.tags or {}))


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


@dataclasses.dataclass
class Context:
    champion: Champion
    dataset: object
    labels: list
    splits: list
    predictions: dict  # split -> predictions frame of the registered model
    out: Path
    args: object
    fit_predict: object = None
    numbers: dict = dataclasses.field(default_factory=dict)
    _study: tuple | None = None
    _trial_predictions: dict = dataclasses.field(default_factory=dict)

    @property
    def config(self):
        return self.champion.config

    def study(self):
        """(optuna study, [{number, value, run_id, params}] of complete trials) or (None, reason)."""
        if self._study is None:
            self._study = _load_study(self)
        return self._study

    def trial_predictions(self, run_id: str) -> dict:
        """A trial's validation predictions: its val_predictions.json artifact or, for runs logged before
        that artifact existed, its bundle re-run on the validation images; copied to trials/<run_id>.json."""
        import mlflow

        if run_id not in self._trial_predictions:
            with tempfile.TemporaryDirectory() as directory:
                try:
                    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="val_predictions.json",
                                                               dst_path=directory)
                    document = {**json.loads(Path(path).read_text()), "source": "val_predictions.json"}
                except (mlflow.exceptions.MlflowException, OSError):
                    document = self._rerun_bundle(run_id, Path(directory))
            target = self.out / "trials" / f"{run_id}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(document))
            self._trial_predictions[run_id] = document
        return self._trial_predictions[run_id]

    def _rerun_bundle(self, run_id: str, directory: Path) -> dict:
        items = self.dataset.split("validation")
        frame = predict_items(run_predictor(run_id, directory), items, self.labels, "validation")
        frame = frame[frame["error"] == ""]
        return {"labels": self.labels, "relpaths": list(frame["relpath"]),
                "y_true": [self.labels.index(label) for label in frame["true"]],
                "y_pred": [self.labels.index(label) for label in frame["predicted"]],
                "probabilities": frame[[f"p_{label}" for label in self.labels]].round(6).to_numpy().tolist(),
                "source": "bundle/model.keras re-run on the validation images"}


def _load_study(context: Context):
    import mlflow
    import optuna

    name = context.args.study or context.champion.study
    if not name:
        return None, "the model's run names no Optuna study (tag optuna.study); pass --study NAME"
    url = context.args.storage
    if not url or url.endswith((".journal", ".log")) or url.startswith("journal:"):
        path = Path((url or str(DEFAULT_JOURNAL)).removeprefix("journal:"))
        if not path.is_file():
            return None, f"no Optuna journal at {path} (pass --storage)"
    try:
        study = optuna.load_study(study_name=name, storage=make_storage(url))
    except KeyError:
        return None, f"no study {name!r} in {url or DEFAULT_JOURNAL}"
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "mlflow_run_id" in t.user_attrs]
    runs = mlflow.search_runs(experiment_ids=[context.champion.run.info.experiment_id], output_format="list",
                              filter_string=f"tags.`optuna.study` = '{name}'", max_results=10000)
    params = {run.info.run_id: run.data.params for run in runs}
    trials = [{"number": t.number, "value": float(t.value), "run_id": t.user_attrs["mlflow_run_id"],
               "params": {**params.get(t.user_attrs["mlflow_run_id"], {}), **{k: str(v) for k, v in t.params.items()}}}
              for t in complete]
    return study, trials
