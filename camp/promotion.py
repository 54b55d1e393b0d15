"""Promotion: a registered model version takes `@champion` only when it beats the trivial floors and the
current champion on the same validation images, each by a paired bootstrap (`study.promotion`); the
comparison is recorded in the version's tags either way, so a tie or a near-chance model leaves the
champion where it was and says why. Where either model was fit on train + validation
(`study.finalize.train_on_validation`) the comparison is on test, the only split both held out.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np

from camp import metrics, names
from camp.config import PromotionConfig
from camp.evaluation import evaluate_version, split_predictions
from camp.registry import CHAMPION, MODEL_NAME
from camp.run_config import prepare_dataset


def validation_outputs(model_uri: str, config, split: str = "validation") -> dict:
    """The model's probabilities on `config`'s validation (or test) images, through pyfunc from raw files,
    in the shape of a run's `val_predictions.json` (unreadable images left out)."""

    dataset, _ = prepare_dataset(config)
    outputs = split_predictions(mlflow.pyfunc.load_model(model_uri).unwrap_python_model(), dataset, split)
    return {**outputs, "probabilities": outputs["probabilities"].tolist()}


def run_predictions(run_id: str, split: str = "validation") -> dict | None:
    """A run's logged predictions on `split` (`val_predictions.json`, `test_predictions.json`), or None."""
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{names.PREDICTIONS[split]}")
    except Exception:  # noqa: BLE001 - older runs, or a store without the artifact: evaluated instead
        return None


def _aligned(first: dict, second: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, first's probabilities, second's) over the validation images both scored."""
    position = {relpath: index for index, relpath in enumerate(second["relpaths"])}
    shared = [(index, position[relpath]) for index, relpath in enumerate(first["relpaths"]) if relpath in position]
    if not shared:
        raise ValueError("the candidate and the champion share no validation image")
    mine, theirs = (np.array(indices) for indices in zip(*shared))
    return (np.asarray(first["y_true"])[mine], np.asarray(first["probabilities"], dtype=np.float64)[mine],
            np.asarray(second["probabilities"], dtype=np.float64)[theirs])


def gate(metric: str, maximize: bool, y: np.ndarray, candidate: np.ndarray, champion: np.ndarray | None,
         rule) -> dict:
    """Should `candidate` (validation probabilities) take @champion? Paired bootstraps against the trivial
    floors and the `champion` (same items); returns the decision, the reason and the intervals."""

    sign = names.gain_sign("maximize" if maximize else "minimize")

    def versus(other):  # the candidate's gain (positive: better) and its interval
        difference, low, high = metrics.paired_bootstrap(metric, y, candidate, other, rule.resamples, rule.confidence)
        return (sign * difference, *sorted((sign * low, sign * high)))

    out: dict = {"floors": {}}
    for name, floor in metrics.trivial_predictions(metric, y, candidate.shape[1]).items():
        gain, low, high = versus(floor)
        out["floors"][name] = {"gain": round(gain, 4), "interval": [round(low, 4), round(high, 4)]}
        if low <= 0:
            return {**out, "promote": False, "reason": f"does not beat {name} ({metric} gain {gain:+.4f}, "
                    f"{rule.confidence:.0%} interval [{low:+.4f}, {high:+.4f}] not above 0): a near-trivial model"}
    if champion is None:
        return {**out, "promote": True, "reason": "first champion"}
    gain, low, high = versus(champion)
    out.update(gain=round(gain, 4), interval=[round(low, 4), round(high, 4)])
    if rule.min_gain is not None:
        better = gain > 0 and gain >= rule.min_gain
        test = f"gain {gain:+.4f} vs min_gain {rule.min_gain}"
    else:
        better = low > 0
        test = f"gain {gain:+.4f}, {rule.confidence:.0%} interval [{low:+.4f}, {high:+.4f}]"
    return {**out, "promote": better, "reason": ("beats" if better else "does not beat") + f" the champion: {test}"}


def register_and_promote(model_uri: str, run_id: str, value: float, config, data_fingerprint: str,
                         log=print, tags: dict | None = None, predictions: dict | None = None, rule=None,
                         split: str = "validation"):
    """Register a model version (with camp's tags and any `tags` given); move `champion` to it only if it
    passes `gate` (`rule`: a `PromotionConfig`), on its `predictions` on `split` (a `val_predictions.json`,
    else computed through pyfunc) and the champion's on the same images. `split` is test for a model fit on
    train + validation (`value` is then its test score); a champion fit so is compared on test too, since
    validation is not held out for it. The comparison is recorded in the version's tags, and a move as
    `camp.promoted_at`. Returns (version, promoted: bool)."""
    from mlflow import MlflowClient

    rule = rule or PromotionConfig()
    client = MlflowClient()
    version = mlflow.register_model(model_uri, MODEL_NAME, tags={
        **(tags or {}), names.METRIC: names.on_split(config.metric, split), names.VALUE: f"{value:.6f}",
        names.DATA_FINGERPRINT: data_fingerprint, names.RUN_ID: run_id})
    try:
        champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champion = None
    champion_tags = (champion.tags or {}) if champion is not None else {}
    if champion_tags.get(names.FIT_ON) == names.TRAIN_AND_VALIDATION and split == "validation":
        split, predictions = "test", None  # the champion trained on validation: only test is fair to both
        log(f"@{CHAMPION} v{champion.version} was fit on train + validation: comparing on test")
    mine = predictions or validation_outputs(model_uri, config, split)
    theirs = None
    if champion is not None:
        if champion_tags.get(names.DATA_FINGERPRINT) == data_fingerprint and champion_tags.get(names.RUN_ID):
            theirs = run_predictions(champion_tags[names.RUN_ID], split)
        if theirs is None or not set(theirs["relpaths"]) & set(mine["relpaths"]):
            log(f"scoring @{CHAMPION} v{champion.version} on this {split} set ...")
            theirs = validation_outputs(f"models:/{MODEL_NAME}@{CHAMPION}", config, split)
    y, candidate, champion_probabilities = _aligned(mine, theirs or mine)
    decision = gate(config.metric, config.direction == "maximize", y, candidate,
                    None if champion is None else champion_probabilities, rule)
    reason = decision["reason"] if split == "validation" else f"on test: {decision['reason']}"
    recorded = {names.PROMOTION: reason[:4000],
                names.FLOOR_GAIN: json.dumps(decision["floors"])}
    if champion is not None:
        recorded.update({names.COMPARED_WITH: str(champion.version), names.GAIN_VS_CHAMPION: str(decision.get("gain")),
                         names.GAIN_INTERVAL: json.dumps(decision.get("interval"))})
    for key, text in recorded.items():
        client.set_model_version_tag(MODEL_NAME, version.version, key, text)
    try:
        evaluate_version(model_uri, version, run_id, config, data_fingerprint)
    except (OSError, ValueError, mlflow.exceptions.MlflowException) as error:  # the version stands without it
        log(f"warning: could not evaluate v{version.version} on validation and test: {error}")
    where = f"{MODEL_NAME} v{version.version} ({names.on_split(config.metric, split)} {value:.4f})"
    if decision["promote"]:
        _promote(client, version)
        if champion is None:
            log(f"@{CHAMPION} -> {where}: the first champion (it beats the trivial floors)")
        else:
            log(f"@{CHAMPION} moved from v{champion.version} to {where}: it {decision['reason']}")
    elif champion is None:
        log(f"registered {where}, not promoted: it {decision['reason']}; no @{CHAMPION} is set")
    else:
        log(f"registered {where}; @{CHAMPION} stays on v{champion.version}: the new version {decision['reason']}")
    return version, decision["promote"]


def _promote(client, version) -> None:
    """Move @champion to `version` and record when (tag `camp.promoted_at`)."""
    from datetime import datetime, timezone

    client.set_registered_model_alias(MODEL_NAME, CHAMPION, version.version)
    client.set_model_version_tag(MODEL_NAME, version.version, names.PROMOTED_AT,
                                 datetime.now(timezone.utc).isoformat(timespec="seconds"))


def verdict(version) -> str:
    """The promotion verdict recorded on a registered version (tag `camp.promotion`)."""
    tags = mlflow.MlflowClient().get_model_version(MODEL_NAME, version.version).tags or {}
    return tags.get(names.PROMOTION, "")
