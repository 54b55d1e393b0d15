"""camp.distill and finalize's distillation (`study.finalize.distill`): the student starts from the best CNN
member, learns from the ensemble, and is registered, tagged and served in the ensemble's place; where it
cannot be trained, the ensemble is registered as before."""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap

import numpy as np
import optuna
import pytest

from camp import cli, distill, quantize
from camp.config import FinalizeConfig

STUDY = """
study:
  name: dist
  n_trials: 2
  sampler: {name: random, seed: 3}
  pruner: {name: none}
  warm_start:
    - model: {family: hog_linear, hog_cell: 4}
    - model: {family: cnn}
  finalize: {ensemble: top_k, max_members: 2, tta: none, heldout_splits: 0}
data: {label_map: camp5}
seed: 3
preprocess: {crop_method: none, mode: gray, size: 24}
model:
  family: {choice: [cnn, hog_linear]}
  hog_cell: {choice: [4, 6], when: {family: hog_linear}}
  conv_blocks: 2
  filters: 8
  dense_units: 16
  max_epochs: 2
  min_epochs: 1
  lr_schedule: cosine
  learning_rate: 0.003
"""


def _bundle(tmp_path, members: dict[str, bool]):
    """An ensemble bundle whose members are CNNs (a `model.keras` file) or not."""
    for name, is_cnn in members.items():
        (tmp_path / "members" / name).mkdir(parents=True)
        (tmp_path / "members" / name / ("model.keras" if is_cnn else "model.pkl")).write_bytes(b"")
    (tmp_path / "ensemble.json").write_text(json.dumps({"members": list(members)}))
    return tmp_path


def test_the_student_starts_from_the_best_cnn_member_by_validation(tmp_path):
    bundle = _bundle(tmp_path, {"0-trial-4": False, "1-trial-0": True, "2-trial-2": True})
    assert distill.best_cnn_member(bundle, [0.9, 0.7, 0.8], maximize=True) == 2  # the HOG member is best, not a CNN
    assert distill.best_cnn_member(bundle, [0.9, 0.7, 0.8], maximize=False) == 1  # a loss: lower is better


def test_an_ensemble_without_a_cnn_has_nothing_to_start_from(tmp_path):
    with pytest.raises(ValueError, match="needs a CNN member"):
        distill.best_cnn_member(_bundle(tmp_path, {"0-trial-1": False}), [0.5], maximize=True)


def test_the_student_warms_up_then_decays_to_zero():
    rate = distill.student_schedule(epochs=6, steps_per_epoch=10)
    values = [float(rate(step)) for step in range(61)]
    assert values[0] < distill.PEAK_LEARNING_RATE / 50  # a fresh Adam starts near zero, not at the peak
    assert values[10] == pytest.approx(distill.PEAK_LEARNING_RATE)
    assert all(a < b for a, b in zip(values[:10], values[1:11]))
    assert all(a >= b for a, b in zip(values[10:60], values[11:61]))
    assert values[60] == pytest.approx(0.0, abs=1e-9)
    assert float(distill.student_schedule(epochs=1, steps_per_epoch=10)(0)) == pytest.approx(distill.PEAK_LEARNING_RATE)


def test_distill_settings_are_checked():
    assert FinalizeConfig(distill=6, share=0.25).distill == 6  # share may reserve the student's time
    with pytest.raises(ValueError, match="finalize.distill must be in"):
        FinalizeConfig(distill=-1)
    with pytest.raises(ValueError, match="with train_on_validation"):
        FinalizeConfig(distill=2, train_on_validation=True)


def test_serve_fast_is_the_default_study_with_distillation():
    """sweeps/serve-fast.yaml differs from the default study only in its name and finalize's distillation
    (and the share of the timeout kept for it; a student serves in the ensemble's place, so no serving floor or
    cascade): a measurement of one is a measurement of the other's search."""
    from pathlib import Path

    from camp.config import load_study_file

    sweeps = Path(__file__).resolve().parent.parent / "sweeps"
    default, fast = load_study_file(sweeps / "default.yaml"), load_study_file(sweeps / "serve-fast.yaml")
    assert fast.study.finalize.distill > 0 and fast.study.finalize.share > 0 and default.study.finalize.distill == 0
    same_finalize = dataclasses.replace(fast.study.finalize, distill=0, share=default.study.finalize.share,
                                        min_images_per_second=default.study.finalize.min_images_per_second,
                                        cascade=default.study.finalize.cascade)
    assert dataclasses.replace(fast.study, name="default", finalize=same_finalize) == default.study
    assert (fast.preprocess, fast.model, fast.data, fast.seed) == (default.preprocess, default.model, default.data,
                                                                   default.seed)


@pytest.fixture()
def dist_sweep(isolated, synthetic_data):
    path = isolated / "dist.yaml"
    path.write_text(textwrap.dedent(STUDY))
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", str(path), "--data", str(synthetic_data), "--storage", str(journal),
                     "--no-register"]) == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return isolated, path, optuna.load_study(study_name="dist", storage=storage)


def _register(study, path, synthetic_data, distill_epochs: int) -> dict:
    """finalize's registration of the two warm-start trials as an ensemble, with `distill_epochs`."""
    import mlflow

    from camp import ensemble, finalize
    from camp.config import load_study_file
    from camp.objective import plan_for

    study_file = load_study_file(path)
    study_file = dataclasses.replace(study_file, study=dataclasses.replace(
        study_file.study, finalize=dataclasses.replace(study_file.study.finalize, distill=distill_epochs)))
    plan = plan_for(study_file, 2, None, None, str(synthetic_data))
    pool = finalize.candidates(study, True)
    y = np.asarray(pool[0][1]["y_true"])
    probabilities = [np.asarray(p["probabilities"]) for _, p in pool]
    selection = ensemble.select(y, probabilities, "val/macro_f1", True, "top_k", max_members=2)
    parent = next(run for run in mlflow.search_runs(output_format="list") if run.data.tags.get("camp.role") == "sweep")
    summary: dict = {}
    finalize._log_and_register(study, plan, summary, parent.info.run_id, [pool[i][0] for i in selection.members],
                               selection, y, [probabilities[i] for i in selection.members], pool, "none")
    return summary


@pytest.mark.slow
def test_the_distilled_student_is_registered_and_served_in_the_ensembles_place(dist_sweep, synthetic_data, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from camp.registry import CampClassifier

    directory, path, study = dist_sweep
    summary = _register(study, path, synthetic_data, distill_epochs=1)
    client = MlflowClient()
    version = client.get_model_version("camp-classifier", summary["registered_version"])
    student = mlflow.get_run(summary["best_run_id"])
    teacher = mlflow.get_run(version.tags["camp.teacher"])
    assert student.data.tags["camp.role"] == "student" and teacher.data.tags["camp.role"] == "ensemble"
    assert version.run_id == student.info.run_id and version.tags["camp.tta"] == "none"
    assert student.data.tags["mlflow.parentRunId"] == teacher.data.tags["mlflow.parentRunId"]
    cnn_trial = next(t for t in study.trials if t.params.get("model.family") == "cnn")
    assert student.data.tags["camp.finalist_of"] == str(cnn_trial.number)  # the only CNN member
    assert summary["distilled"]["epochs"] == 1 and "teacher_value" in summary["distilled"]
    # one model, not an ensemble: what it serves on validation is what finalize scored it on
    bundle = mlflow.artifacts.download_artifacts(run_id=student.info.run_id, artifact_path="bundle",
                                                 dst_path=str(directory / "student"))
    # registered as every camp model is: the pyfunc's bundle under artifacts/bundle (camp report, the benches)
    registered = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/camp-classifier/{version.version}")
    assert (directory.joinpath(registered) / "artifacts" / "bundle" / "camp.json").is_file()
    monkeypatch.setenv(quantize.FLOAT_ENV, "1")
    served = CampClassifier().load_bundle(bundle)
    assert served.members is None and (directory / "student" / "bundle" / "model.keras").is_file()
    logged = mlflow.artifacts.load_dict(f"runs:/{student.info.run_id}/val_predictions.json")
    probabilities, errors = served._probabilities([str(synthetic_data / r) for r in logged["relpaths"]], [])
    assert not errors
    np.testing.assert_allclose(probabilities, np.asarray(logged["probabilities"]), atol=1e-4)
    assert float(student.data.metrics["val/macro_f1"]) == pytest.approx(summary["distilled"]["value"], abs=1e-4)
    # it keeps its best validation epoch, the start member's own weights counting as epoch 0: a student that
    # learnt serves other probabilities than its start, one that never beat it serves the start's
    start = CampClassifier().load_bundle(mlflow.artifacts.download_artifacts(
        run_id=cnn_trial.user_attrs["mlflow_run_id"], artifact_path="bundle", dst_path=str(directory / "start")))
    moved = np.abs(start._probabilities([str(synthetic_data / r) for r in logged["relpaths"]], [])[0]
                   - probabilities).max()
    assert summary["distilled"]["best_epoch"] in (0, 1) and (moved > 1e-4) == (summary["distilled"]["best_epoch"] == 1)
    # camp report lists the teacher and its members beside the student, and says what the champion is
    from types import SimpleNamespace

    from camp import data, report_context, report_finalists

    dataset = data.load_dataset(synthetic_data)
    predict = report_context.run_predictor(student.info.run_id, directory / "report")
    context = SimpleNamespace(
        champion=SimpleNamespace(run=student, version_tags=version.tags), dataset=dataset, labels=dataset.labels,
        predictions={"validation": report_context.predict_items(predict, dataset.split("validation"), dataset.labels,
                                                                "validation")},
        args=SimpleNamespace(bootstrap=50), numbers={})
    blocks = report_finalists.finalists_blocks(context)
    rows = [row[0] for row in blocks[1].rows]
    assert rows[:2] == ["champion (distilled)", "teacher: the ensemble it was distilled from"] and len(rows) == 4  # + 2 members
    assert any("distilled from that ensemble" in getattr(block, "text", "") for block in blocks)


@pytest.mark.slow
def test_when_the_student_cannot_be_trained_the_ensemble_is_registered(dist_sweep, synthetic_data, monkeypatch, capsys):
    import mlflow

    directory, path, study = dist_sweep

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(distill, "distill_in_child", broken)
    summary = _register(study, path, synthetic_data, distill_epochs=1)
    assert mlflow.get_run(summary["best_run_id"]).data.tags["camp.role"] == "ensemble"
    assert "distilled" not in summary
    assert "distill: not done (OSError: No space left on device); registering the ensemble" in capsys.readouterr().out
    assert os.environ.get(quantize.FLOAT_ENV) is None
