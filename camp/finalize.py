"""After a sweep's trials: combine the best trials into one model (`study.finalize`), log it as an MLflow
run nested under the sweep, and register it; or register the best single trial when no ensemble beats it.

Members are chosen on the trials' own validation probabilities (`val_predictions.json`), by Caruana's
greedy selection with replacement or the plain top-k (`camp.ensemble`). The ensemble is served by the
same pyfunc as a single trial (`camp.registry.CampClassifier`, which averages its members), so
`camp predict`, `make serve` and `models:/camp-classifier@champion` do not change for the user. With
`train_on_validation` the chosen members are retrained on train + validation first (camp.refit_full) and
those are registered, scored and compared on test.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import optuna
import yaml

from camp import (
    cascade,
    distill,
    ensemble,
    metrics,
    names,
    promotion,
    refit_full,
    registry,
    run_config,
    serving_cost,
    tracking,
)
from camp.finalize_choice import calibrate, cascade_of, choose, heldout_estimate, report_floor, tta_options
from camp.sweep_summary import champion_lock, register_champion

STATE = optuna.trial.TrialState
MAX_CANDIDATES = 12  # the best complete trials considered for an ensemble


def candidates(study: optuna.Study, maximize: bool) -> list[tuple[optuna.trial.FrozenTrial, dict]]:
    """(trial, val_predictions) for the best complete trials that logged their validation predictions
    on the same images as the best one."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == STATE.COMPLETE
                and t.user_attrs.get("mlflow_run_id")]
    complete.sort(key=lambda t: t.value, reverse=maximize)
    out = []
    for trial in complete[:MAX_CANDIDATES]:
        try:
            predictions = mlflow.artifacts.load_dict(f"runs:/{trial.user_attrs['mlflow_run_id']}/val_predictions.json")
        except Exception as error:  # a run on another machine's store may lack its artifacts
            print(f"finalize: trial #{trial.number} has no readable val_predictions.json ({type(error).__name__}); "
                  "left out of the ensemble")
            continue
        if out and predictions["relpaths"] != out[0][1]["relpaths"]:
            print(f"finalize: trial #{trial.number} was validated on other images; left out of the ensemble")
            continue
        out.append((trial, predictions))
    return out


def finalize(study: optuna.Study, plan, summary: dict, storage, parent_run_id: str, time_left: float | None = None,
             workers: int = 1) -> None:
    """Register the study's result: an ensemble when `study.finalize` asks for one and it beats the best
    single trial on validation by `min_gain`, else the best trial (`camp.sweep_summary.register_champion`);
    with `train_on_validation`, its members retrained on train + validation in the `time_left` of
    study.timeout, `workers` at a time (camp.refit_full). The sweep's parent run then names the version it
    registered and the promotion verdict."""
    _register_result(study, plan, summary, storage, parent_run_id, time_left, workers)
    client = mlflow.MlflowClient()
    if summary.get("registered_version"):
        client.set_tag(parent_run_id, names.REGISTERED_VERSION, str(summary["registered_version"]))
        client.set_tag(parent_run_id, names.PROMOTION, str(summary.get("promotion", ""))[:4000])
    heldout = summary.get("ensemble", {}).get("heldout_value")
    if heldout is not None and "distilled" not in summary:  # the estimate is of the ensemble, not of its student
        estimate = {names.HELDOUT_VALUE: f"{heldout:.4f}", names.HELDOUT_SE: f"{summary['ensemble']['heldout_se']:.4f}"}
        for key, text in estimate.items():
            client.set_tag(parent_run_id, key, text)
            if summary.get("registered_version"):
                client.set_model_version_tag(registry.MODEL_NAME, str(summary["registered_version"]), key, text)
        if summary["ensemble"].get("registered") and summary.get("best_run_id"):  # the ensemble's own run
            client.log_metric(summary["best_run_id"], names.heldout(plan.study_file.study.metric), heldout)


def _register_result(study: optuna.Study, plan, summary: dict, storage, parent_run_id: str, time_left, workers) -> None:
    config = plan.study_file.study.finalize
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    wanted = config.ensemble != "none" or config.tta != "none" or config.train_on_validation
    pool = candidates(study, maximize) if wanted else []
    if not pool:
        register_champion(study, plan, summary, storage)
        return
    metric = plan.study_file.study.metric
    y = np.asarray(pool[0][1]["y_true"])
    options, floor = tta_options(pool, config.tta), None
    if config.min_images_per_second:  # the serving floor: each candidate's cost measured here
        costs = serving_cost.measure(pool, run_config.validation_paths(_meta(pool[0][0])))
        floor, timings = calibrate(y, options, config, metric, study.direction,
                                   serving_cost.floor(costs, config.min_images_per_second, options),
                                   functools.partial(serving_cost.served_seconds, costs))
    tta, selection, use_ensemble, selections = choose(y, options, config, metric, study.direction, floor)
    if floor is not None:
        report_floor(floor, tta, selection, y, options, config, metric, study.direction, summary)
        summary["serving_floor"]["timed"] = timings
    plain_best = selections["none"].best_single_value
    members = [pool[i][0] for i in selection.members]
    gain = (selection.value - plain_best) * names.gain_sign(study.direction)
    summary["ensemble"] = {"method": config.ensemble, "tta": tta, "members": [t.number for t in members],
                           "weights": [round(w, 3) for w in selection.weights], "value": round(selection.value, 4),
                           "best_single_value": round(plain_best, 4), "gain": round(gain, 4)}
    if config.heldout_splits:
        heldout, error = heldout_estimate(y, options, config, metric, study.direction, floor)
        summary["ensemble"]["heldout_value"], summary["ensemble"]["heldout_se"] = round(heldout, 4), round(error, 4)
        print(f"finalize: {metric} {selection.value:.4f} is scored on the images it was chosen on; chosen on half of "
              f"them and scored on the other half ({config.heldout_splits} splits) the same procedure scores "
              f"{heldout:.4f} ± {error:.4f}: expect about that on new photos")
    if "flip" in selections:
        summary["ensemble"]["value_without_tta"] = round(selections["none"].value, 4)
        summary["ensemble"]["value_with_flip"] = round(selections["flip"].value, 4)
    described = ", ".join(f"#{t.number} x{w:.2f}" for t, w in zip(members, selection.weights))
    if "flip" in selections:
        print(f"finalize: flip test-time augmentation: {metric} {selections['flip'].value:.4f} with, "
              f"{selections['none'].value:.4f} without ({config.tta}: {'flip' if tta == 'flip' else 'none'})"
              + (", within the serving floor" if floor is not None else ""))
    retrained = (refit_full.retrain(members, study.study_name, parent_run_id, time_left, workers)
                 if config.train_on_validation else None)
    if tta == "none" and not use_ensemble and retrained is None:
        if config.ensemble != "none":
            print(f"finalize: the {config.ensemble} ensemble scores {metric} {selections['none'].value:.4f}, no gain "
                  f"over the best trial's {plain_best:.4f}: registering the best trial")
        summary["ensemble"]["registered"] = False
        register_champion(study, plan, summary, storage)
        return
    print(f"finalize: {'ensemble of ' + str(len(members)) + ' trials' if use_ensemble else 'the best trial'} "
          f"({described}){' with flip TTA' if tta == 'flip' else ''}: {metric} {selection.value:.4f} vs the best "
          f"trial's {plain_best:.4f} (+{gain:.4f}, chosen on these same validation images, so optimistic)")
    summary["ensemble"]["registered"] = True
    summary["ensemble"]["fit_on"] = names.TRAIN_AND_VALIDATION if retrained else "train"
    with champion_lock(storage):
        _log_and_register(study, plan, summary, parent_run_id, members, selection, y,
                          [options[tta][i] for i in selection.members], pool, tta, retrained, floor)


def _meta(trial) -> dict:
    return mlflow.artifacts.load_dict(f"runs:/{trial.user_attrs['mlflow_run_id']}/bundle/camp.json")


def _log_and_register(study, plan, summary, parent_run_id, members, selection, y, probabilities, pool, tta,
                      retrained: dict | None = None, floor=None) -> None:
    """Log the chosen members (their validation `probabilities`, in member order) as one bundle in a run
    nested under the sweep, and register it. With `retrained` ({trial: run}, camp.refit_full) the bundle
    holds those runs' models instead, scored and compared on test."""
    labels = pool[0][1]["labels"]
    member_runs = [t.user_attrs["mlflow_run_id"] for t in members]
    split, relpaths = "validation", pool[0][1]["relpaths"]
    if retrained:
        split, member_runs = "test", [retrained[t.number] for t in members]
        scored = [mlflow.artifacts.load_dict(f"runs:/{run}/{names.PREDICTIONS['test']}") for run in member_runs]
        if any(s["relpaths"] != scored[0]["relpaths"] for s in scored):
            raise ValueError(f"finalize: the retrained members {member_runs} were tested on different images")
        key = "probabilities_flip" if tta == "flip" else "probabilities"
        probabilities = [np.asarray(s[key], dtype=np.float64) for s in scored]
        y, relpaths = np.asarray(scored[0]["y_true"]), scored[0]["relpaths"]
    prefix = names.split_prefix(split)
    combined = ensemble.average(probabilities, selection.weights)
    gated = None
    if plan.study_file.study.finalize.cascade and split == "validation" and len(members) > 1:
        plain = [np.asarray(predictions["probabilities"], dtype=np.float64) for _, predictions in pool]  # the gates' own
        gated = cascade_of(selection.members, plain, combined, plan.study_file.study.finalize.cascade, floor=floor, tta=tta)
        summary.setdefault("ensemble", {})["cascade"] = (gated.spec() | {"gate_trial": members[gated.gate].number}
                                                         if gated else None)
        if gated is not None:  # what the served model answers on validation, and what is scored and compared
            combined = cascade.combine(plain[selection.members[gated.gate]], combined, gated.threshold)
            print(f"finalize: cascade: trial #{members[gated.gate].number} alone answers the {gated.exit_share:.0%} of "
                  f"validation images where its top probability is >= {gated.threshold:.3f}, the ensemble the rest; "
                  f"labels agree with the whole ensemble's on {gated.agreement:.1%}")
    predicted = combined.argmax(axis=1)
    values = _scores(y, combined, labels, prefix)
    best_run = mlflow.get_run(member_runs[0])
    with tempfile.TemporaryDirectory() as directory:
        bundle = Path(directory) / "bundle"
        member_names = []
        for position, run_id in enumerate(member_runs):
            name = f"{position}-trial-{members[position].number}"
            downloaded = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle",
                                                             dst_path=str(Path(directory) / name))
            shutil.copytree(downloaded, bundle / "members" / name)
            member_names.append(name)
        meta = json.loads((bundle / "members" / member_names[0] / "camp.json").read_text())
        spec = {"labels": labels, "members": member_names, "weights": selection.weights,
                "method": plan.study_file.study.finalize.ensemble, "tta": tta,
                "trials": [t.number for t in members], "runs": member_runs,
                "cascade": gated.spec() if gated else None}
        (bundle / "ensemble.json").write_text(json.dumps(spec, indent=2))
        # the best member's config stands for the ensemble where one config is needed (report, fold models)
        (bundle / "camp.json").write_text(json.dumps({**meta, "ensemble": spec}, indent=2))
        config = run_config.run_config_from_meta(meta)
        tags = {names.STUDY: study.study_name, names.ROLE: "ensemble", names.GIT_COMMIT: tracking.git_commit(),
                names.MEMBERS: ",".join(member_runs), names.MEMBER_TRIALS: ",".join(str(t.number) for t in members),
                names.MEMBER_WEIGHTS: ",".join(f"{w:.4f}" for w in selection.weights), names.TTA: tta}
        if retrained:
            tags[names.FIT_ON] = names.TRAIN_AND_VALIDATION
        if gated:
            tags[names.CASCADE] = (f"gate trial {members[gated.gate].number}, threshold {gated.threshold:.4f}, answers "
                                   f"{gated.exit_share:.4f}, agreement {gated.agreement:.4f}")
        for name in (names.DATA_FINGERPRINT, names.DATA_ROOT, names.SEED):
            if name in best_run.data.tags:
                tags[name] = best_run.data.tags[name]
        with mlflow.start_run(run_name=f"ensemble-{study.study_name}", nested=True, parent_run_id=parent_run_id,
                              tags=tags) as run:
            mlflow.log_metrics(values)
            predictions = {"labels": labels, "relpaths": relpaths, "y_true": y.tolist(),
                           "y_pred": predicted.tolist(), "probabilities": combined.round(6).tolist()}
            mlflow.log_dict(predictions, names.PREDICTIONS[split])
            mlflow.log_artifacts(str(bundle), "bundle")
            info = registry.log_pyfunc(bundle, run_config.first_validation_path(meta), run_config.validation_paths(meta))
        members_tags = {key: tags[key] for key in (names.MEMBERS, names.MEMBER_TRIALS, names.MEMBER_WEIGHTS, names.TTA,
                                                   names.FIT_ON, names.CASCADE) if key in tags}
        value = (selection.value if split == "validation" and gated is None
                 else values[names.on_split(config.metric, split)])
        student = (_student_run(study, plan, parent_run_id, bundle, members, {**tags, names.TEACHER: run.info.run_id},
                                Path(directory) / "student" / "bundle", summary)  # pyfunc artifact: "bundle"
                   if plan.study_file.study.finalize.distill and split == "validation" else None)
        if student is not None:  # one CNN in the ensemble's place: registered, compared and promoted as it would be
            summary["distilled"]["teacher_value"] = round(value, 4)
            members_tags = {names.TEACHER: run.info.run_id, names.TTA: "none"}
            run, info, value, predictions, config = student
        version, promoted = promotion.register_and_promote(info.model_uri, run.info.run_id, value, config,
                                                           tags[names.DATA_FINGERPRINT], tags=members_tags,
                                                           predictions=predictions,
                                                           rule=plan.study_file.study.promotion, split=split)
    summary.update({"registered_version": version.version, "champion_moved": promoted,
                    "promotion": promotion.verdict(version),
                    "best_run_id": run.info.run_id})


def _student_run(study, plan, parent_run_id: str, bundle: Path, members, tags: dict, out: Path, summary: dict):
    """Distil the ensemble `bundle` into one CNN (camp.distill, in a child process with every core), log it as
    a run nested under the sweep beside its teacher's, with its pyfunc: (run, model info, validation value,
    validation predictions, its run config), or None when it cannot be done (the ensemble is then registered)."""
    epochs = plan.study_file.study.finalize.distill
    try:
        start = distill.best_cnn_member(bundle, [t.value for t in members], names.maximizing(study.direction))
        print(f"finalize: distill: training one CNN on the ensemble's probabilities, from trial "
              f"#{members[start].number}'s model, {epochs} epoch(s), to serve in its place", flush=True)
        result = distill.distill_in_child(bundle, start, epochs, out)
    except Exception as error:  # noqa: BLE001 - the ensemble, logged and servable, is registered instead
        print(f"finalize: distill: not done ({type(error).__name__}: {error}); registering the ensemble", flush=True)
        return None
    meta = json.loads((out / "camp.json").read_text())
    config, labels, y = run_config.run_config_from_meta(meta), meta["labels"], np.asarray(result["y_val"])
    probabilities = np.asarray(result["probabilities"])
    predicted = probabilities.argmax(axis=1)
    values = _scores(y, probabilities, labels, "val")
    student_tags = {**{key: tags[key] for key in (names.STUDY, names.GIT_COMMIT, names.DATA_FINGERPRINT,
                                                   names.DATA_ROOT, names.SEED) if key in tags},
                    names.ROLE: "student", names.FINALIST_OF: str(members[start].number), names.TTA: "none",
                    names.TEACHER: tags[names.TEACHER]}
    predictions = {"labels": labels, "relpaths": result["val_relpaths"], "y_true": y.tolist(), "y_pred": predicted.tolist(),
                   "probabilities": probabilities.round(6).tolist(),
                   "probabilities_flip": np.asarray(result["probabilities_flip"]).round(6).tolist()}
    with mlflow.start_run(run_name=f"student-{study.study_name}", nested=True, parent_run_id=parent_run_id,
                          tags=student_tags) as run:
        mlflow.log_params({"distill.epochs": epochs, "distill.start_trial": members[start].number,
                           "distill.teacher_share": distill.TEACHER_SHARE, "distill.peak_learning_rate": distill.PEAK_LEARNING_RATE,
                           "distill.warmup_epochs": distill.WARMUP_EPOCHS,
                           "distill.batch_norm_momentum": distill.BATCH_NORM_MOMENTUM})
        mlflow.log_metrics({**values, "distill/seconds": result["seconds"], "best_epoch": result["best_epoch"],
                            "distill/teacher_train_macro_f1": result["teacher_train_macro_f1"]})
        mlflow.log_dict(predictions, names.PREDICTIONS["validation"])
        mlflow.log_text(yaml.safe_dump(config.to_dict(), sort_keys=False), "config.yaml")
        mlflow.log_artifacts(str(out), "bundle")
        info = registry.log_pyfunc(out, run_config.first_validation_path(meta), run_config.validation_paths(meta))
    summary["distilled"] = {"start_trial": members[start].number, "epochs": epochs, "best_epoch": result["best_epoch"],
                            "value": round(result["value"], 4),
                            "seconds": result["seconds"], "run_id": run.info.run_id}
    kept = (f"its best epoch, {result['best_epoch']} of {epochs}" if result["best_epoch"] else
            f"no epoch beat its start on validation, so it is trial #{members[start].number}'s model as it was")
    print(f"finalize: distill: the student scores {config.metric} {result['value']:.4f} on validation ({kept}) in "
          f"{result['seconds']:.0f} s; it is registered in the ensemble's place", flush=True)
    return run, info, result["value"], predictions, config


def _scores(y: np.ndarray, probabilities: np.ndarray, labels: list, prefix: str) -> dict:
    """A registered candidate's metrics on the split it is scored on (`prefix`: val or test), as a run logs them."""
    predicted = probabilities.argmax(axis=1)
    return {**metrics.classification_metrics(y, predicted, prefix), **metrics.per_label_metrics(y, predicted, labels, prefix),
            f"{prefix}/loss": ensemble.score(y, probabilities, names.VAL_LOSS)}
