"""finalize's serving floor (`study.finalize.min_images_per_second`): choose the ensemble only among
those an estimate puts at or above the floor, as AutoGluon's `infer_limit` does.

Each candidate trial is served alone on this machine (its CNN converted to int8 weights, as registration
serves it where the labels agree: camp.quantize; where they do not, its float32 flatbuffer serves ~10% slower)
and timed on batches of validation images sent as base64 text, as `make serve` receives them. Its cost per
image is split into its preprocessing (vetting, decoding, preprocessing: paid once per distinct preprocessing
in an ensemble) and its model (paid per member and per test-time view; once for HOG members of one feature
shape, which share their features). An ensemble's estimate is the sum of its parts: on a 2-core machine each
part already uses both cores, so they add up (BENCHMARKS.md, "Serving: where a batch's time goes"). Against
the served champions of the tenth round the sum was 1-20% optimistic (BENCHMARKS.md), so finalize aims
`MARGIN` above the floor. Registration measures the registered model itself
(`camp.serving_images_per_second`, printed and tagged).
A cascade's estimate (`Costs.cascade_seconds`) pays each preprocessing and the gate's pass for every image and
the rest for the images the gate passes on; `Floor.exit_share_needed` inverts it: the share of images a gate
must answer alone for the ensemble to meet the floor.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import mlflow

from camp import classical, quantize
from camp.registry import CampClassifier, client_batches, preprocessing_seconds_per_image, seconds_per_image

VIEWS = {"none": 1, "flip": 2}  # model passes per image under each test-time augmentation


@dataclasses.dataclass
class Costs:
    """Per candidate (pool order): its preprocessing's key and its model's seconds per image and view;
    per preprocessing key: seconds per image; per candidate, optionally, the key of the work it shares with
    other members (`features_of`: HOG features of one shape on one preprocessing, computed once per request
    for all of them by classical.FeatureMemo), None where it shares nothing."""

    preprocess_of: list
    model_seconds: list[float]
    preprocess_seconds: dict
    features_of: list | None = None
    served: list = dataclasses.field(default_factory=list)  # each candidate loaded as it was timed (`served_seconds`)
    batches: list = dataclasses.field(default_factory=list)  # the client batches it was timed on

    def _shared(self, members) -> float:
        return sum(self.preprocess_seconds[key] for key in {self.preprocess_of[m] for m in members})

    def _models(self, members) -> float:
        """Each distinct member's model cost per view; members sharing their features pay once (the dearest)."""
        by_work: dict = {}
        for m in set(members):
            work = self.features_of[m] if self.features_of and self.features_of[m] is not None else ("own", m)
            by_work[work] = max(by_work.get(work, 0.0), self.model_seconds[m])
        return sum(by_work.values())

    def seconds(self, members, tta: str) -> float:
        """Estimated seconds per image of serving `members` (candidate indices) with `tta`."""
        return self._shared(members) + VIEWS[tta] * self._models(members)

    def images_per_second(self, members, tta: str) -> float:
        return 1.0 / self.seconds(members, tta)

    def cascade_seconds(self, members, tta: str, gate: int, exit_share: float) -> float:
        """Estimated seconds per image of `members` served as a cascade (camp.cascade) whose gate, candidate
        `gate`, answers `exit_share` of the images alone: every image pays each preprocessing (the served
        model preprocesses a batch whole) and the gate's plain pass, the rest every other pass."""
        rest = VIEWS[tta] * self._models(members) - self.model_seconds[gate]
        return self._shared(members) + self.model_seconds[gate] + (1.0 - exit_share) * rest


def measure(pool, paths: list[str]) -> Costs:
    """Serve each candidate of `pool` ((trial, val_predictions) pairs) alone on `paths` and split its
    cost per image into preprocessing and model."""
    batches = client_batches(paths)
    costs = Costs([], [], {}, [], [], batches)
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


def served_seconds(costs: Costs, members, weights, tta: str, gated=None) -> float:
    """Seconds per image of candidates `members` served together (with `weights`, `tta` and the cascade
    `gated`, if any) as registration would assemble them, timed on the batches `costs` was measured on: what
    the sum of parts estimates, read off the model itself."""
    model = CampClassifier().assemble([costs.served[m] for m in members], weights, tta, gated)
    try:
        return seconds_per_image(model.probabilities, costs.batches)
    finally:
        for member in model.members:  # the candidates serve alone again, as they were timed
            member.tta = "none"


def add(costs: Costs, served: CampClassifier, batches: list) -> None:
    """Time one loaded single model (tta as it is set) on `batches` and append its split to `costs`: its
    preprocessing's cost, measured once per distinct preprocessing, and the rest as its model's."""
    key = served.preprocess
    if key not in costs.preprocess_seconds:
        costs.preprocess_seconds[key] = preprocessing_seconds_per_image(key, batches)
    total = seconds_per_image(served.probabilities, batches)
    costs.preprocess_of.append(key)
    costs.model_seconds.append(max(total - costs.preprocess_seconds[key], 1e-6))
    costs.served.append(served)
    if costs.features_of is not None:  # HOG members of one shape share their features when served together
        model = served.model
        costs.features_of.append((key, model.cell, model.orientations) if isinstance(model, classical.HogLinear)
                                 else None)


# finalize aims this far above a floor: the sum of parts was up to 20% optimistic against the served model
# (BENCHMARKS.md, "Tenth round"), and one model's batch readings vary by 20-30% from run to run ("Where the
# twelfth round's champions spend their serving time")
MARGIN = 1.2


@dataclasses.dataclass(frozen=True)
class Floor:
    """The serving floor as finalize applies it: the candidates' `costs`, the floor in images per second, the
    `margin` aimed above it, finalize's augmentation options (`offered`), and the `scale` its estimates take
    from timing a chosen model itself (`calibrated`). `budget` is `budgets` at the target: the options an
    ensemble can meet it under, an affordable(members) predicate per option, and what was given up, in words."""

    costs: Costs
    images_per_second: float
    margin: float
    offered: dict
    scale: float = 1.0

    @property
    def target(self) -> float:
        """The estimated images per second finalize aims at."""
        return self.images_per_second * self.margin

    @property
    def budget(self) -> tuple[dict, dict, list[str]]:
        return budgets(self.costs, self.target * self.scale, self.offered)

    def levels(self) -> list["Floor"]:
        """What a cascade tries to meet, in turn: the target (floor x margin), then the floor itself."""
        return [self] if self.margin == 1.0 else [self, dataclasses.replace(self, margin=1.0)]

    def estimate(self, members, tta: str, gated=None) -> float:
        """Estimated seconds per image of `members` served with `tta`, whole or as the cascade `gated` (its
        gate a position in `members`), scaled by what timing a chosen model taught."""
        if gated is None:
            return self.scale * self.costs.seconds(members, tta)
        return self.scale * self.costs.cascade_seconds(members, tta, list(members)[gated.gate], gated.exit_share)

    def calibrated(self, served_seconds: float, estimated_seconds: float) -> "Floor":
        """This floor with its estimates scaled so that a chosen model's estimate matches its timing."""
        return dataclasses.replace(self, scale=self.scale * served_seconds / estimated_seconds)

    def meets(self, members, tta: str) -> bool:
        return self.estimate(members, tta) <= 1.0 / self.target

    def exit_share_needed(self, members, tta: str, gate: int) -> float | None:
        """The least share of images candidate `gate` must answer alone for `members` served as a cascade to
        meet the target (0 where the whole ensemble does), or None where even answering every one would not."""
        limit = 1.0 / (self.target * self.scale)
        alone = self.costs.cascade_seconds(members, tta, gate, 1.0)
        if alone > limit:
            return None
        whole = self.costs.cascade_seconds(members, tta, gate, 0.0)
        return 0.0 if whole <= limit else (whole - limit) / (whole - alone)


def floor(costs: Costs, images_per_second: float, options: dict, margin: float = MARGIN) -> Floor:
    """The serving floor at `images_per_second` for finalize's augmentation `options`, aimed `margin` above."""
    return Floor(costs, images_per_second, margin, options)


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
