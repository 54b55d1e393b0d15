"""camp.finalize and the sweep's new budget knobs, end to end on synthetic data: warm start runs first,
an ensemble is logged, registered and served as one pyfunc, `--seed` reproduces, and no trial starts
that would not fit in the study's timeout."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import optuna
import pytest

from camp import cli, quantize

STUDY = """
study:
  name: fin
  n_trials: 4
  sampler: {name: tpe, seed: 5, n_startup_trials: 2}
  pruner: {name: none}
  warm_start:
    - model: {family: hog_linear, hog_cell: 4}
    - model: {family: cnn}
  finalize: {ensemble: caruana, max_members: 3, tta: auto, min_images_per_second: 1}  # a floor every model meets
data: {label_map: camp5}
seed: 5
preprocess: {crop_method: none, mode: gray, size: 24}
model:
  family: {choice: [cnn, hog_linear]}
  hog_cell: {choice: [4, 6], when: {family: hog_linear}}
  hog_c: {float: [0.01, 1.0], log: true, when: {family: hog_linear}}
  conv_blocks: 2
  filters: 8
  dense_units: 16
  max_epochs: 2
  min_epochs: 1
  lr_schedule: cosine
  learning_rate: 0.003
"""


@pytest.fixture()
def fin_sweep(isolated, synthetic_data):
    path = isolated / "fin.yaml"
    path.write_text(textwrap.dedent(STUDY))
    journal = isolated / "optuna.journal"
    assert cli.main(["sweep", str(path), "--data", str(synthetic_data), "--storage", str(journal)]) == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return isolated, path, optuna.load_study(study_name="fin", storage=storage)


@pytest.mark.slow
def test_warm_start_runs_first_and_an_ensemble_is_served_as_one_model(fin_sweep, synthetic_data):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from camp import ensemble, finalize
    from camp.config import load_study_file
    from camp.objective import plan_for
    from camp.registry import CampClassifier

    directory, path, study = fin_sweep
    # the sweep's registered version and parent run carry finalize's held-out estimate of its choice
    sweep_run = next(run for run in mlflow.search_runs(output_format="list") if run.data.tags.get("camp.role") == "sweep")
    first = MlflowClient().get_model_version("camp-classifier", "1")
    assert 0.0 <= float(first.tags["camp.heldout_value"]) <= 1.0 and float(first.tags["camp.heldout_se"]) >= 0.0
    assert sweep_run.data.tags["camp.heldout_value"] == first.tags["camp.heldout_value"]
    trials = sorted(study.trials, key=lambda t: t.number)
    assert trials[0].params["model.family"] == "hog_linear" and trials[0].params["model.hog_cell"] == 4
    assert trials[0].user_attrs["warm_start"] == "warm_start[0]"
    assert study.metric_names == ["val/macro_f1"]  # optuna-dashboard labels the objective
    assert trials[1].params["model.family"] == "cnn"
    # force an ensemble of the two warm-start trials and register it (the sweep registers one only on a gain)
    plan = plan_for(load_study_file(path), 4, None, None, str(synthetic_data))
    pool = [entry for entry in finalize.candidates(study, True) if entry[0].number in (0, 1)]
    y = np.asarray(pool[0][1]["y_true"])
    probabilities = [np.asarray(p["probabilities"]) for _, p in pool]
    selection = ensemble.select(y, probabilities, "val/macro_f1", True, "top_k", max_members=2)
    parent = next(run for run in mlflow.search_runs(output_format="list") if run.data.tags.get("camp.role") == "sweep")
    summary: dict = {}
    finalize._log_and_register(study, plan, summary, parent.info.run_id, [pool[i][0] for i in selection.members],
                               selection, y, [probabilities[i] for i in selection.members], pool, "none")
    client = MlflowClient()
    version = client.get_model_version("camp-classifier", summary["registered_version"])
    assert version.tags["camp.member_trials"] == ",".join(str(pool[i][0].number) for i in selection.members)
    run = mlflow.get_run(summary["best_run_id"])
    assert run.data.tags["camp.role"] == "ensemble" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    # the served ensemble is the weighted mean of its members, each through its own bundle
    paths = [str(synthetic_data / relpath) for relpath in pool[0][1]["relpaths"]][:6]
    encoded = [__import__("base64").b64encode(open(path, "rb").read()).decode("ascii") for path in paths]
    uri = f"models:/camp-classifier/{version.version}"
    quantized = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"image": encoded}))
    os.environ[quantize.FLOAT_ENV] = "1"  # the float weights, to compare with the members' own to the digit
    try:  # (the variable, as an operator sets it for `make serve`: it reaches the pyfunc's own load)
        served = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"image": encoded}))
    finally:
        del os.environ[quantize.FLOAT_ENV]
    members = []
    for index in selection.members:
        bundle = mlflow.artifacts.download_artifacts(run_id=pool[index][0].user_attrs["mlflow_run_id"],
                                                     artifact_path="bundle", dst_path=str(directory / f"m{index}"))
        members.append(CampClassifier().load_bundle(bundle).probabilities(encoded)[0])
    expected = ensemble.average(members, selection.weights)
    labels = pool[0][1]["labels"]
    np.testing.assert_allclose(served[[f"p_{label}" for label in labels]].to_numpy(float), expected, atol=1e-5)
    assert list(served["label"]) == [labels[i] for i in expected.argmax(axis=1)]
    # as registered, its CNN member serves int8 weights: close to the float ensemble, not equal to it
    assert run.data.tags["camp.serving"] == "int8" and float(run.data.tags["camp.serving_agreement"]) >= 0.99
    assert float(run.data.tags["camp.serving_images_per_second"]) > 0  # measured at registration, on this machine
    np.testing.assert_allclose(quantized[[f"p_{label}" for label in labels]].to_numpy(float), expected, atol=0.02)


def test_with_seed_sets_the_training_and_sampler_seeds(tmp_path):
    from camp.config import load_study_file
    from camp.objective import make_plan, with_seed

    path = tmp_path / "fin.yaml"
    path.write_text(textwrap.dedent(STUDY))
    seeded = with_seed(load_study_file(path), 11)
    assert seeded.seed == 11 and seeded.study.sampler.seed == 11 and seeded.study.name == "fin"
    plan = make_plan(cli.build_parser().parse_args(["sweep", str(path), "--seed", "12"]))
    assert plan.study_file.seed == 12 and plan.study_file.study.sampler.seed == 12
    with pytest.raises(ValueError, match="--seed"):
        with_seed(load_study_file(path), -1)


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_a_warm_start_trial_is_never_pruned(isolated, tmp_path, monkeypatch):
    """The pruner may stop any sampled trial, but not the warm start the study promises to reach."""
    import types

    from camp import objective
    from camp.config import load_study_file

    path = tmp_path / "fin.yaml"
    path.write_text(textwrap.dedent(STUDY))
    plan = objective.plan_for(load_study_file(path), 4, None, None, None)

    def fake_train(config, epoch_callback=None, **_):
        for epoch in range(3):
            epoch_callback(epoch, {"val/macro_f1": 0.1, "val/loss": 1.0, "val/accuracy": 0.1})
        return types.SimpleNamespace(value=0.5, cache_hit=False, seconds=1.0)

    monkeypatch.setattr(objective, "train", fake_train)
    study = optuna.create_study(direction="maximize", pruner=_AlwaysPrune())
    study.enqueue_trial({"model.family": "cnn"}, user_attrs={"warm_start": "warm_start[1]"})
    study.enqueue_trial({"model.family": "cnn"})
    import mlflow

    from camp import tracking

    tracking.setup()
    with mlflow.start_run() as parent:
        pass
    study.optimize(objective.make_objective(plan, parent_run_id=parent.info.run_id), n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]


@pytest.mark.slow
def test_flip_tta_is_served_as_finalize_scored_it(fin_sweep, synthetic_data):
    """The mirrored validation probabilities a trial logs are what its registered flip-TTA bundle serves
    on the same files: finalize chooses test-time augmentation on the numbers the user will get."""
    import mlflow
    from mlflow import MlflowClient

    from camp import ensemble, finalize
    from camp.config import load_study_file
    from camp.objective import plan_for
    from camp.registry import CampClassifier

    directory, path, study = fin_sweep
    plan = plan_for(load_study_file(path), 4, None, None, str(synthetic_data))
    pool = [entry for entry in finalize.candidates(study, True) if entry[0].user_attrs.get("mlflow_run_id")][:2]
    options = finalize.tta_options(pool, "auto")
    assert set(options) == {"none", "flip"}
    y = np.asarray(pool[0][1]["y_true"])
    selection = ensemble.select(y, options["flip"], "val/macro_f1", True, "top_k", max_members=2)
    parent = next(run for run in mlflow.search_runs(output_format="list") if run.data.tags.get("camp.role") == "sweep")
    summary: dict = {}
    finalize._log_and_register(study, plan, summary, parent.info.run_id, [pool[i][0] for i in selection.members],
                               selection, y, [options["flip"][i] for i in selection.members], pool, "flip")
    version = MlflowClient().get_model_version("camp-classifier", summary["registered_version"])
    assert version.tags["camp.tta"] == "flip"
    bundle = mlflow.artifacts.download_artifacts(run_id=summary["best_run_id"], artifact_path="bundle",
                                                 dst_path=str(directory / "tta"))
    model = CampClassifier().load_bundle(bundle)
    assert model.tta == "flip" and all(member.tta == "flip" for member in model.members)
    files = [str(synthetic_data / relpath) for relpath in pool[0][1]["relpaths"]]
    served, errors = model._probabilities(files, [])
    assert not errors
    expected = ensemble.average([options["flip"][i] for i in selection.members], selection.weights)
    np.testing.assert_allclose(served, expected, atol=1e-4)
    # and without augmentation the same members serve the plain average, which differs
    for member in model.members:
        member.tta = "none"
    plain, _ = model._probabilities(files, [])
    np.testing.assert_allclose(plain, ensemble.average([options["none"][i] for i in selection.members],
                                                       selection.weights), atol=1e-4)
    assert np.abs(plain - served).max() > 1e-3


def test_a_cascade_is_chosen_on_validation_registered_and_served_as_scored(fin_sweep, synthetic_data):
    """`finalize.cascade`: the gate and threshold come from the members' logged validation probabilities, the
    registered bundle serves exactly what finalize scored, and the version's tags and value say so."""
    import mlflow
    from mlflow import MlflowClient

    from camp import cascade, ensemble, finalize
    from camp.config import load_study_file
    from camp.objective import plan_for
    from camp.registry import CampClassifier

    directory, path, study = fin_sweep
    gated_path = directory / "gated.yaml"
    gated_path.write_text(path.read_text().replace("min_images_per_second: 1}", "min_images_per_second: 1, cascade: 0.9}"))
    plan = plan_for(load_study_file(gated_path), 4, None, None, str(synthetic_data))
    assert plan.study_file.study.finalize.cascade == 0.9
    pool = [entry for entry in finalize.candidates(study, True) if entry[0].user_attrs.get("mlflow_run_id")][:2]
    options = finalize.tta_options(pool, "auto")
    y = np.asarray(pool[0][1]["y_true"])
    selection = ensemble.select(y, options["flip"], "val/macro_f1", True, "top_k", max_members=2)
    parent = next(run for run in mlflow.search_runs(output_format="list") if run.data.tags.get("camp.role") == "sweep")
    summary: dict = {}
    members = [pool[i][0] for i in selection.members]
    finalize._log_and_register(study, plan, summary, parent.info.run_id, members, selection, y,
                               [options["flip"][i] for i in selection.members], pool, "flip")
    whole = ensemble.average([options["flip"][i] for i in selection.members], selection.weights)
    expected = cascade.choose({k: options["none"][i] for k, i in enumerate(selection.members)}, whole, 0.9)
    assert expected is not None and summary["ensemble"]["cascade"]["gate_trial"] == members[expected.gate].number
    version = MlflowClient().get_model_version("camp-classifier", summary["registered_version"])
    assert version.tags["camp.cascade"].startswith(f"gate trial {members[expected.gate].number}, threshold")
    bundle = mlflow.artifacts.download_artifacts(run_id=summary["best_run_id"], artifact_path="bundle",
                                                 dst_path=str(directory / "gated"))
    model = CampClassifier().load_bundle(bundle)
    assert model.cascade == cascade.Cascade(expected.gate, expected.threshold, round(expected.exit_share, 4),
                                            round(expected.agreement, 4))
    files = [str(synthetic_data / relpath) for relpath in pool[0][1]["relpaths"]]
    served, errors = model._probabilities(files, [])
    assert not errors
    scored = cascade.combine(options["none"][selection.members[expected.gate]], whole, expected.threshold)
    np.testing.assert_allclose(served, scored, atol=1e-4)
    logged = mlflow.artifacts.load_dict(f"runs:/{summary['best_run_id']}/val_predictions.json")
    np.testing.assert_allclose(logged["probabilities"], scored, atol=1e-5)
    assert float(version.tags["camp.value"]) == pytest.approx(ensemble.score(y, scored, "val/macro_f1"), abs=1e-4)

    # under a serving floor the whole ensemble misses (8.5 ms an image; 130 images/s is 7.7 ms), the cascade
    # registered is the one that answers just what the floor needs
    from camp import serving_cost
    from camp.finalize_choice import cascade_of

    costs = serving_cost.Costs(["p"] * len(pool), [0.002] * len(pool), {"p": 0.0005})
    floor = serving_cost.floor(costs, 130, options, margin=1.0)
    summary = {}
    finalize._log_and_register(study, plan, summary, parent.info.run_id, members, selection, y,
                               [options["flip"][i] for i in selection.members], pool, "flip", None, floor)
    needed = cascade_of(selection.members, options["none"], whole, 0.9, floor=floor, tta="flip")
    assert needed is not None and summary["ensemble"]["cascade"]["exit_share"] == round(needed.exit_share, 4)
    assert needed.exit_share >= floor.exit_share_needed(selection.members, "flip", selection.members[needed.gate])
    assert needed.exit_share <= expected.exit_share  # never more than the agreement alone would let it answer


@pytest.mark.slow
def test_a_serving_floor_measures_each_candidate_and_chooses_only_what_it_admits(fin_sweep, capsys):
    """Each candidate is served alone (CNNs as int8) and timed; the floor then keeps the expensive candidates
    out of the choice, and the choice without the floor is reported beside it."""
    from camp import finalize, run_config, serving_cost
    from camp.config import FinalizeConfig
    from camp.preprocess import PreprocessConfig

    directory, path, study = fin_sweep
    pool = finalize.candidates(study, True)
    paths = run_config.validation_paths(finalize._meta(pool[0][0]))
    costs = serving_cost.measure(pool, paths)
    assert len(costs.model_seconds) == len(pool) and min(costs.model_seconds) > 0
    assert all(isinstance(key, PreprocessConfig) for key in costs.preprocess_of)
    assert 0 < costs.images_per_second({0}, "none") < float("inf")

    # known costs: every CNN candidate is too slow for the floor, the HOG ones are not
    cnn = [m for m, (trial, _) in enumerate(pool) if trial.params.get("model.family") == "cnn"
           or trial.user_attrs.get("family") == "cnn"]
    assert cnn and len(cnn) < len(pool)
    fixed = serving_cost.Costs(["p"] * len(pool), [0.01 if m in cnn else 0.0001 for m in range(len(pool))], {"p": 0.0001})
    config = FinalizeConfig(ensemble="caruana", max_members=3, tta="auto", min_images_per_second=1000)
    y = np.asarray(pool[0][1]["y_true"])
    options = finalize.tta_options(pool, config.tta)
    summary: dict = {}
    serving_floor = serving_cost.floor(fixed, config.min_images_per_second, options)
    tta, selection, _, _ = finalize.choose(y, options, config, "val/macro_f1", "maximize", serving_floor)
    finalize.report_floor(serving_floor, tta, selection, y, options, config, "val/macro_f1", "maximize", summary)
    assert not set(selection.members) & set(cnn)
    assert fixed.images_per_second(selection.members, tta) >= 1000
    floor = summary["serving_floor"]
    assert floor["min_images_per_second"] == 1000 and floor["estimated_images_per_second"] >= 1000
    assert floor["value"] == pytest.approx(selection.value, abs=1e-4)
    assert "without the floor" in capsys.readouterr().out
