"""finalize's serving floor (`study.finalize.min_images_per_second`): choose the ensemble only among
those an estimate puts at or above the floor, as AutoGluon's `infer_limit` does.

Each candidate trial is served alone on this machine (its CNN converted to int8 weights, as registration
serves it where the labels agree: camp.quantize; where they do not, its float32 flatbuffer serves ~10% slower)
and timed on batches of validation images sent as base64 text, as `make serve` receives them. Its cost per
image is split into its preprocessing (vetting, decoding, preprocessing: paid once per distinct preprocessing
in an ensemble) and its model (paid per member and per test-time view). An ensemble's estimate is the sum of its parts: on a 2-core machine each part already
uses both cores, so they add up (BENCHMARKS.md, "Serving: where a batch's time goes"). Against the served
champions of the tenth round the sum was 1-20% optimistic (BENCHMARKS.md), so a floor with no margin can
be missed by that much; HOG members sharing one feature shape are counted twice, which errs the other way.
Registration measures the registered model itself (`camp.serving_images_per_second`, printed and tagged).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import mlflow

from camp import quantize
from camp.registry import CampClassifier, client_batches, preprocessing_seconds_per_image, seconds_per_image

VIEWS = {"none": 1, "flip": 2}  # model passes per image under each test-time augmentation


@dataclasses.dataclass
class Costs:
    """Per candidate (pool order): its preprocessing's key and its model's seconds per image and view;
    per preprocessing key: seconds per image."""

    preprocess_of: list
    model_seconds: list[float]
    preprocess_seconds: dict

    def seconds(self, members, tta: str) -> float:
        """Estimated seconds per image of serving `members` (candidate indices) with `tta`."""
        shared = sum(self.preprocess_seconds[key] for key in {self.preprocess_of[m] for m in members})
        return shared + VIEWS[tta] * sum(self.model_seconds[m] for m in set(members))

    def images_per_second(self, members, tta: str) -> float:
        return 1.0 / self.seconds(members, tta)


def measure(pool, paths: list[str]) -> Costs:
    """Serve each candidate of `pool` ((trial, val_predictions) pairs) alone on `paths` and split its
    cost per image into preprocessing and model."""
    batches = client_batches(paths)
    costs = Costs([], [], {})
    with tempfile.TemporaryDirectory() as directory:
        for position, (trial, _) in enumerate(pool):
            bundle = Path(mlflow.artifacts.download_artifacts(run_id=trial.user_attrs["mlflow_run_id"],
                                                              artifact_path="bundle",
                                                              dst_path=str(Path(directory) / str(position))))
            served = CampClassifier().load_bundle(bundle, weights="float")
            for folder, model in served.keras_models().items():  # served as registration would: int8 first
                (Path(folder) / quantize.LITE_FILE).write_bytes(quantize.convert(model))
            add(costs, CampClassifier().load_bundle(bundle), batches)
    return costs


def add(costs: Costs, served: CampClassifier, batches: list) -> None:
    """Time one loaded single model (tta as it is set) on `batches` and append its split to `costs`: its
    preprocessing's cost, measured once per distinct preprocessing, and the rest as its model's."""
    key = served.preprocess
    if key not in costs.preprocess_seconds:
        costs.preprocess_seconds[key] = preprocessing_seconds_per_image(key, batches)
    total = seconds_per_image(served.probabilities, batches)
    costs.preprocess_of.append(key)
    costs.model_seconds.append(max(total - costs.preprocess_seconds[key], 1e-6))


def budgets(costs: Costs, floor: float, options: dict) -> tuple[dict, dict, list[str]]:
    """For finalize's augmentation `options`: ({tta: affordable(members) predicate}, the options an
    ensemble can meet the floor under, and what was given up, in words). An augmentation under which no
    single candidate meets the floor is dropped; if none is left, only the cheapest candidate without
    augmentation is admitted (the floor cannot be met, and finalize says so)."""
    limit = 1.0 / floor
    every = range(len(costs.model_seconds))
    kept = {tta: probabilities for tta, probabilities in options.items()
            if any(costs.seconds({m}, tta) <= limit for m in every)}
    notes = [f"{tta} test-time augmentation: no candidate serves {floor:g} images/s with it"
             for tta in options if tta not in kept]
    affordable = {tta: (lambda members, tta=tta: costs.seconds(members, tta) <= limit) for tta in kept}
    if not kept:
        cheapest = min(every, key=lambda m: costs.seconds({m}, "none"))
        kept = {"none": options["none"]}
        affordable = {"none": lambda members: set(members) == {cheapest}}
        notes.append(f"no candidate serves {floor:g} images/s: the cheapest one "
                     f"(~{costs.images_per_second({cheapest}, 'none'):.0f} images/s) is the only one admitted")
    return affordable, kept, notes
