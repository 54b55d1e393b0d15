"""The registered champion and its study's trials on validation and test, as one JSON object: what the
search issue's "done when" reads (champion test macro-F1, per-label test recall, the champion against
the warm-start trial and the best HOG + linear trial of the same study), the finalize issue's
validation-to-test drop, from the in-sample validation score and from finalize's held-out estimate, and,
where the champion serves int8 weights, the same model with its float weights.

    MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db .venv/bin/python bench/champion.py [--study default]

Test is for reporting only: nothing here feeds back into a study. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from camp import names, quantize  # noqa: E402 - after the path: the bench runs from a checkout


def scores(predict, dataset, split: str, keep: dict | None = None) -> dict:
    """Macro-F1, accuracy and per-label recall of `predict` on a split; `keep` receives the predictions."""
    import numpy as np
    from sklearn.metrics import f1_score, recall_score

    items = dataset.split(split)
    output = predict([item.path for item in items])
    readable = (output["error"] == "").to_numpy()
    labels = list(dataset.labels)
    y_pred = np.array([labels.index(label) for label in output["label"][readable]])
    y_true = np.array([item.label for item, ok in zip(items, readable) if ok])
    if keep is not None:
        keep.update(y_true=y_true, y_pred=y_pred)
    recall = recall_score(y_true, y_pred, labels=list(range(len(labels))), average=None, zero_division=0)
    return {"macro_f1": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 4),
            "accuracy": round(float((y_true == y_pred).mean()), 4),
            "recall": {label: round(float(r), 4) for label, r in zip(labels, recall)}, "n": int(readable.sum())}


def paired_difference(y, first, second) -> dict:
    """Macro-F1(first) - macro-F1(second) on the same images, with a 95% paired percentile bootstrap interval."""
    from camp import metrics

    difference, low, high = metrics.paired_bootstrap("test/macro_f1", y, first, second, resamples=2000)
    return {"difference": round(difference, 4), "ci95": [round(low, 4), round(high, 4)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/camp-classifier@champion")
    parser.add_argument("--study", default=None, help="study whose trials to score too (default: the champion's)")
    parser.add_argument("--storage", default="mlruns/optuna.journal")
    args = parser.parse_args()

    import mlflow
    import optuna

    from camp import tracking
    from camp.registry import CampClassifier
    from camp.report import load_champion
    from camp.run_config import prepare_dataset
    from camp.storage import make_storage

    tracking.setup()
    champion = load_champion(args.model)
    dataset, _ = prepare_dataset(champion.config)
    model = mlflow.pyfunc.load_model(champion.uri)
    champion_test: dict = {}
    result = {"model": args.model, "version": champion.version, "run_id": champion.run_id,
              "members": champion.run.data.tags.get(names.MEMBER_TRIALS),
              "champion": {split: scores(model.unwrap_python_model().predict_files, dataset, split,
                                         champion_test if split == "test" else None)
                           for split in ("validation", "test")}}
    # the served model's CNNs may be TensorFlow Lite flatbuffers (camp.quantize): the same model with its Keras
    # weights, side by side, says what converting cost
    result["serving"] = {"weights": champion.run.data.tags.get(names.SERVING, quantize.SERVING[None]),
                         "validation_agreement": champion.run.data.tags.get(names.SERVING_AGREEMENT)}
    if result["serving"]["weights"] != quantize.SERVING[None]:
        served = Path(mlflow.artifacts.download_artifacts(artifact_uri=champion.uri)) / "artifacts" / "bundle"
        float_weights = CampClassifier().load_bundle(served, weights="float")
        result["champion_float_weights"] = {split: scores(float_weights.predict_files, dataset, split)
                                            for split in ("validation", "test")}
    study_name = args.study or champion.study
    study = optuna.load_study(study_name=study_name, storage=make_storage(args.storage))
    trials, predictions = {}, {}
    with tempfile.TemporaryDirectory() as directory:
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            run_id = trial.user_attrs.get("mlflow_run_id")
            bundle = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle",
                                                         dst_path=str(Path(directory) / str(trial.number)))
            member = CampClassifier().load_bundle(bundle)
            predictions[trial.number] = {}
            trials[trial.number] = {"family": trial.user_attrs.get("family"), "seconds": trial.user_attrs.get("seconds"),
                                    "warm_start": trial.user_attrs.get("warm_start"),
                                    "val_objective": round(trial.value, 4),
                                    "test": scores(member.predict_files, dataset, "test",
                                                   predictions[trial.number])["macro_f1"]}
    result["trials"] = trials
    warm = [t for t in trials.values() if t["warm_start"] == "warm_start[0]"]
    hog = [t for t in trials.values() if t["family"] == "hog_linear"]
    result["warm_start_test"] = warm[0]["test"] if warm else None
    result["best_hog_by_val"] = max(hog, key=lambda t: t["val_objective"]) if hog else None
    members = [int(n) for n in (result["members"] or "").split(",") if n]
    if members:  # an ensemble: against its best member by validation, on the same test images
        best_member = max(members, key=lambda n: trials[n]["val_objective"])
        result["ensemble_vs_best_member_test"] = {"member": best_member, **paired_difference(
            champion_test["y_true"], champion_test["y_pred"], predictions[best_member]["y_pred"])}
    teacher_run = champion.version_tags.get(names.TEACHER)
    if teacher_run:  # a distilled student (study.finalize.distill): against the ensemble it learnt from, on test
        with tempfile.TemporaryDirectory() as directory:
            bundle = mlflow.artifacts.download_artifacts(run_id=teacher_run, artifact_path="bundle", dst_path=directory)
            teacher_test: dict = {}
            teacher = scores(CampClassifier().load_bundle(bundle).predict_files, dataset, "test", teacher_test)
        result["teacher_test"] = teacher  # float weights: the run's bundle, as finalize logged it
        result["student_vs_teacher_test"] = paired_difference(champion_test["y_true"], champion_test["y_pred"],
                                                              teacher_test["y_pred"])
    result["champion_val_to_test_drop"] = round(result["champion"]["validation"]["macro_f1"]
                                                - result["champion"]["test"]["macro_f1"], 4)
    # finalize's held-out estimate (the choice repeated on validation halves it did not choose on): the
    # validation figure that did not pick the champion, beside the in-sample one above
    if names.HELDOUT_VALUE in champion.version_tags:
        heldout = float(champion.version_tags[names.HELDOUT_VALUE])
        result["champion_heldout_validation"] = {"macro_f1": heldout,
                                                 "se": float(champion.version_tags.get(names.HELDOUT_SE, "nan"))}
        result["champion_heldout_to_test_drop"] = round(heldout - result["champion"]["test"]["macro_f1"], 4)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
