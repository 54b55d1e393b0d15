"""camp.evaluation: a registered version's run carries its validation and test evaluation (metrics, a
confusion matrix and precision-recall curves per split), and the version says what it is."""

from __future__ import annotations

import pytest


def test_the_registered_champion_is_evaluated_on_validation_and_test(current_smoke_store):
    import mlflow

    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("camp-classifier", "champion")
    run_id = version.tags["camp.run_id"]
    run = client.get_run(run_id)
    for split, count in (("validation", 30), ("test", 30)):
        assert 0.0 <= run.data.metrics[f"eval/{split}/macro_f1"] <= 1.0
        assert sum(run.data.metrics[f"eval/{split}/support/{label}"]
                   for label in ("cap_and_hat", "outerwear", "tops", "bottoms", "shoes")) == count
        files = {item.path for item in client.list_artifacts(run_id, f"evaluation/{split}")}
        assert files == {f"evaluation/{split}/confusion_matrix.png", f"evaluation/{split}/precision_recall.png"}
    description = version.description
    assert "study smoke" in description and version.tags["camp.data_fingerprint"] in description
    assert f"test macro-F1 {run.data.metrics['eval/test/macro_f1']:.3f}" in description


def test_the_evaluation_matches_the_served_models_own_predictions(current_smoke_store, synthetic_data):
    import mlflow
    import numpy as np
    from sklearn.metrics import f1_score

    from camp.evaluation import split_predictions
    from camp.run_config import prepare_dataset, run_config_from_meta

    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("camp-classifier", "champion")
    run_id = version.tags["camp.run_id"]
    config = run_config_from_meta(mlflow.artifacts.load_dict(f"runs:/{run_id}/bundle/camp.json"))
    dataset, _ = prepare_dataset(config)
    model = mlflow.pyfunc.load_model("models:/camp-classifier@champion").unwrap_python_model()
    outputs = split_predictions(model, dataset, "test")
    expected = f1_score(outputs["y_true"], np.argmax(outputs["probabilities"], axis=1), average="macro", zero_division=0)
    assert client.get_run(run_id).data.metrics["eval/test/macro_f1"] == pytest.approx(expected)
