"""camp.train: one tracked training run on tiny data: what lands in MLflow, determinism, the real data."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from camp import config as config_module
from camp import data, registry
from camp.run_config import fixed_run_config
from camp.train import train

LABELS = ("cap_and_hat", "outerwear", "tops", "bottoms", "shoes")
TINY = """
study: {name: tiny}
seed: 7
preprocess: {mode: gray, size: 32}
model: {conv_blocks: 2, filters: 8, dense_units: 16, batch_size: 16, max_epochs: %(epochs)d, patience: 5}
"""


def run_config(tmp_path: Path, data_path, epochs: int = 2, extra: str = ""):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY % {"epochs": epochs} + extra)
    return fixed_run_config(config_module.load_study_file(path), data_path=str(data_path))


def client():
    from mlflow import MlflowClient

    return MlflowClient()


def history(run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((metric.step, metric.value) for metric in client().get_metric_history(run_id, key))


def artifact_paths(run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for info in client().list_artifacts(run_id, path):
        out |= artifact_paths(run_id, info.path) if info.is_dir else {info.path}
    return out


def test_fixed_run_config_needs_fixed_knobs(tmp_path, synthetic_data):
    config = run_config(tmp_path, synthetic_data)
    assert config.preprocess.mode == "gray" and config.model.filters == 8 and config.seed == 7
    assert config.data_path == str(synthetic_data)
    (tmp_path / "range.yaml").write_text("model: {filters: {int: [8, 16]}}\n")
    with pytest.raises(ValueError, match=r"model\.filters is a search range"):
        fixed_run_config(config_module.load_study_file(tmp_path / "range.yaml"))
    (tmp_path / "bad.yaml").write_text("preprocess: {threshold_block: 4}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: preprocess.threshold_block=4"):
        fixed_run_config(config_module.load_study_file(tmp_path / "bad.yaml"))


def test_train_logs_one_complete_run(isolated, synthetic_data, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # a tiny run lasts seconds, not 10
    config = run_config(isolated, synthetic_data)
    result = train(config, progress=False, run_name="tiny")
    registry.log_pyfunc_for_run(result.run_id)  # the caller logs the served model (as `camp train` does)
    assert result.epochs_run == 2 and result.best_epoch in (0, 1)
    assert result.labels == LABELS and len(result.y_val) == 30 and result.val_probabilities.shape == (30, 5)
    assert not result.cache_hit

    runs = client().search_runs([mlflow.get_experiment_by_name("camp").experiment_id])
    assert [run.info.run_id for run in runs] == [result.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"

    params = run.data.params
    assert params["model.conv_blocks"] == "2" and params["model.filters"] == "8"
    assert params["preprocess.mode"] == "gray" and params["preprocess.size"] == "32"
    assert params["seed"] == "7" and params["data.label_map"] == "camp5"

    for key in ("train/loss", "val/loss", "val/accuracy", "val/macro_f1"):
        assert [step for step, _ in history(result.run_id, key)][:2] == [0, 1], key
    assert len(history(result.run_id, "train/loss")) == 2
    f1 = history(result.run_id, "val/macro_f1")
    # the selected (best) epoch's value is logged once more, after the last epoch
    assert f1[-1] == (2, pytest.approx(max(value for _, value in f1[:2])))
    assert result.value == pytest.approx(f1[-1][1]) == pytest.approx(result.metrics["val/macro_f1"])
    assert run.data.metrics["best_epoch"] == result.best_epoch
    # MLflow's own system metrics (psutil), beside camp's process RSS (which MLflow does not record)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    assert run.data.metrics["system/rss_mb"] > 0
    for label in LABELS:
        assert 0.0 <= run.data.metrics[f"val/recall/{label}"] <= 1.0
        assert run.data.metrics[f"val/support/{label}"] == 6

    tags = run.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                          text=True).stdout.strip()
    assert tags["camp.git_commit"] in (head, f"{head}-dirty")
    assert tags["camp.data_fingerprint"] == data.fingerprint(data.load_dataset(synthetic_data).items)
    assert tags["camp.cache"] == "miss" and tags["camp.skipped_images"] == "0"
    inputs = {entry.tags[0].value: entry.dataset for entry in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "training", "validation"]  # MLflow's dataset inputs, one per split
    assert {dataset.digest for dataset in inputs.values()} == {tags["camp.data_fingerprint"][:20]}
    assert all(str(synthetic_data) in dataset.source for dataset in inputs.values())

    artifacts = artifact_paths(result.run_id)
    for expected in ("confusion_matrix.png", "preprocessing.png", "config.yaml", "bundle/model.keras",
                     "bundle/camp.json"):
        assert expected in artifacts
    logged = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="config.yaml",
                                                 dst_path=str(isolated / "download"))
    assert yaml.safe_load(Path(logged).read_text()) == yaml.safe_load(yaml.safe_dump(config.to_dict()))

    models = mlflow.search_logged_models(filter_string=f"source_run_id = '{result.run_id}'", output_format="list")
    assert len(models) == 1 and models[0].name == "model"
    served = mlflow.pyfunc.load_model(models[0].model_uri)
    import pandas as pd

    image = data.load_dataset(synthetic_data).split("test")[0].path
    refused = served.predict(pd.DataFrame({"image": [image, str(isolated / "missing.jpg")]}))
    assert (refused["label"] == "").all()  # client-named paths: refused, the same way whether or not they exist
    assert refused.loc[0, "error"].split(":", 1)[1] == refused.loc[1, "error"].split(":", 1)[1]
    assert "CAMP_SERVE_PATHS" in refused.loc[0, "error"]
    monkeypatch.setenv("CAMP_SERVE_PATHS", os.pathsep.join([str(synthetic_data), str(isolated)]))
    output = served.predict(pd.DataFrame({"image": [image, str(isolated / "missing.jpg")]}))
    assert output.loc[0, "label"] in LABELS and output.loc[0, "error"] == ""
    assert output.loc[1, "label"] == "" and "missing.jpg" in output.loc[1, "error"]


def test_same_config_and_seed_give_the_same_history(isolated, synthetic_data):
    config = run_config(isolated, synthetic_data)
    first = train(config, progress=False)
    second = train(config, progress=False)
    assert first.run_id != second.run_id and second.cache_hit
    for key in ("val/macro_f1", "train/loss", "val/loss"):
        assert history(first.run_id, key) == history(second.run_id, key), key
    assert (first.val_probabilities == second.val_probabilities).all()


def test_another_replica_of_the_same_config_trains_differently_on_the_same_split(isolated, synthetic_data):
    first = train(run_config(isolated, synthetic_data, epochs=1), progress=False)
    path = isolated / "replica.yaml"
    path.write_text((TINY % {"epochs": 1}).replace("patience: 5}", "patience: 5, replica: 1}"))
    other = train(fixed_run_config(config_module.load_study_file(path), data_path=str(synthetic_data)),
                  progress=False)
    assert other.cache_hit  # the preprocessing (and so the data split) is shared
    assert first.val_probabilities.shape == other.val_probabilities.shape
    assert not (first.val_probabilities == other.val_probabilities).all()


def test_a_failing_run_is_marked_with_the_error(isolated, synthetic_data, monkeypatch):
    import mlflow

    from camp import train as train_module

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(train_module, "build_model", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(run_config(isolated, synthetic_data), progress=False)
    (run,) = client().search_runs([mlflow.get_experiment_by_name("camp").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["camp.error"] == "RuntimeError: disk on fire"
    assert "error.txt" in artifact_paths(run.info.run_id)


def test_an_unreadable_first_validation_image_does_not_fail_the_run(isolated, tmp_path, synthetic_data):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_data, root)
    (root / "validation" / "hat" / "aaa_broken.jpg").write_text("not an image")  # sorts first
    result = train(run_config(isolated, root, epochs=1), progress=False)
    assert result.y_val.shape == (30,)


@pytest.mark.slow
def test_train_on_a_subset_of_the_real_data(isolated, shared_data):
    config = run_config(isolated, shared_data, epochs=1, extra="data: {max_per_class: 12}\n")
    result = train(config, progress=False)
    assert result.epochs_run == 1 and result.labels == LABELS
    assert len(result.y_val) == 12 * 5  # every camp5 label has >= 12 validation images
    assert 0.0 <= result.value <= 1.0
    run = client().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.max_per_class"] == "12"
    assert "bundle/model.keras" in artifact_paths(result.run_id)


def test_duplicate_files_across_splits_are_logged_as_leakage(isolated, tmp_path, synthetic_data):
    import mlflow

    from camp.config import load_study_file
    from camp.run_config import fixed_run_config
    from camp.train import train

    root = tmp_path / "leaky"
    shutil.copytree(synthetic_data, root)
    leaked = next((root / "train" / "hat").glob("*.jpg"))
    shutil.copy(leaked, root / "validation" / "hat" / "copy-of-train.jpg")
    study = tmp_path / "leak.yaml"
    study.write_text("study: {name: leak}\npreprocess: {mode: gray, size: 24, crop_method: none}\n"
                     "model: {conv_blocks: 1, filters: 8, dense_units: 0, max_epochs: 1, min_epochs: 1}\n")
    result = train(fixed_run_config(load_study_file(study), data_path=str(root)), progress=False)
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["camp.leaked_duplicates"] == "1"
    groups = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/duplicates_across_splits.json")["groups"]
    assert groups == [sorted([f"train:{leaked.relative_to(root)}", "validation:validation/hat/copy-of-train.jpg"])]


def test_runs_leave_no_custom_gradients_behind(isolated, synthetic_data):
    """Keras's optimizer registers a `tf.custom_gradient` per trace that TensorFlow never drops; each one
    holds a whole train-step graph (~19 MB a trial in a sweep process, bench/memory.py)."""
    from tensorflow.python.framework import ops

    def custom_gradients() -> set:
        return {key for key in ops.gradient_registry._registry if str(key).startswith("CustomGradient-")}

    config = run_config(isolated, synthetic_data, epochs=1)
    train(config, progress=False)  # first run in the process: imports, one-time registrations
    before = custom_gradients()
    train(config, progress=False)
    train(config, progress=False)
    assert custom_gradients() == before


def test_a_deadline_shortens_the_cnn_and_its_schedule_still_ends_at_zero(isolated, tmp_path, synthetic_data,
                                                                          monkeypatch):
    """Epochs of 100 s (a stand-in clock read once per epoch) and a deadline 550 s after the first epoch:
    after epoch 2 the pace says 6 epochs fit, so a 12-epoch cosine run stops at 6, tagged, with its
    learning rate at zero on its last step; without a deadline, all 12 run."""
    import itertools

    import mlflow

    from camp import epochs, names
    from camp import train as train_module

    clock = itertools.count(0.0, 100.0)
    monkeypatch.setattr(epochs, "clock", lambda: next(clock))
    path = tmp_path / "deadline.yaml"
    path.write_text(TINY.replace("patience: 5}", "patience: 12, min_epochs: 2, lr_schedule: cosine, warmup_epochs: 1}")
                    % {"epochs": 12})
    config = fixed_run_config(config_module.load_study_file(path), data_path=str(synthetic_data))
    learning_rates = []
    original = train_module._fit_cnn

    def fit_and_read_the_rate(*args, **kwargs):
        fitted = original(*args, **kwargs)
        learning_rates.append(float(fitted[0].optimizer.learning_rate))
        return fitted

    monkeypatch.setattr(train_module, "_fit_cnn", fit_and_read_the_rate)
    shortened = train(config, progress=False, deadline=550.0)
    run = client().get_run(shortened.run_id)
    assert shortened.epochs_run == 6 and run.data.tags[names.SHORTENED] == "6 of 12 epochs"
    assert learning_rates[-1] == pytest.approx(0.0, abs=1e-9)
    # epochs 0-5, then the selected epoch's value at step 6
    assert [step for step, _ in history(shortened.run_id, names.VAL_LOSS)] == list(range(7))
    mlflow.end_run()
    whole = train(config, progress=False)
    assert whole.epochs_run == 12 and names.SHORTENED not in client().get_run(whole.run_id).data.tags


def test_runs_that_share_their_preprocessing_share_one_drawn_grid(isolated, synthetic_data, monkeypatch):
    import mlflow

    import camp.plots as plots

    hog = "model: {family: hog_linear, hog_cell: 8, hog_orientations: 9, hog_c: 0.1}\n"
    path = isolated / "hog.yaml"
    path.write_text("study: {name: grid}\nseed: 7\npreprocess: {mode: gray, size: 32}\n" + hog)
    config = fixed_run_config(config_module.load_study_file(path), data_path=str(synthetic_data))
    first = train(config, progress=False)
    drawn = []
    with monkeypatch.context() as patch:
        patch.setattr(plots, "preprocessing_grid", lambda *args: drawn.append(args) or args[-1])
        second = train(config, progress=False)
    assert drawn == []  # the same preprocessing, data and seed: copied from the cache, not drawn again

    def grid(run_id):
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="preprocessing.png",
                                                        dst_path=str(isolated / run_id))).read_bytes()

    assert grid(first.run_id) == grid(second.run_id) and len(grid(first.run_id)) > 1000
    path.write_text("study: {name: grid}\nseed: 7\npreprocess: {mode: gray, size: 24}\n" + hog)
    resized = train(fixed_run_config(config_module.load_study_file(path), data_path=str(synthetic_data)),
                    progress=False)
    assert grid(resized.run_id) != grid(first.run_id)  # another preprocessing: its own grid
