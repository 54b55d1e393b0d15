"""finalize's choice on the candidates' validation probabilities, before anything is logged: the
test-time augmentation options (`tta_options`), the ensemble or single model under each and which one is
registered (`choose`), its confidence cascade (`cascade_of`), the same procedure scored on validation
images it did not choose on (`heldout_estimate`), and the serving floor's price (`report_floor`). NumPy on
logged predictions only: nothing here trains, serves or talks to MLflow.
"""

from __future__ import annotations

import numpy as np

from camp import cascade, ensemble, names


def tta_options(pool, tta: str) -> dict[str, list[np.ndarray]]:
    """Candidates' validation probabilities without test-time augmentation, and (when `tta` allows it
    and every candidate logged them) with it: `probabilities_flip`, each image's averaged with its mirror's."""
    plain = [np.asarray(p["probabilities"], dtype=np.float64) for _, p in pool]
    options = {"none": plain}
    if tta == "none":
        return options
    missing = [t.number for t, p in pool if "probabilities_flip" not in p]
    if missing:
        print(f"finalize: trial(s) {missing} logged no mirrored validation predictions (trained by an older camp): "
              "no test-time augmentation")
        return options
    options["flip"] = [np.asarray(p["probabilities_flip"], dtype=np.float64) for _, p in pool]
    return options


def choose(y: np.ndarray, options: dict[str, list[np.ndarray]], config, metric: str, direction, floor=None):
    """finalize's whole choice on validation labels `y` and candidates' probabilities per augmentation
    (`tta_options`): an ensemble selection per augmentation, the augmentation (`_choose`), and the ensemble or
    its best single candidate (`_uses_ensemble`). With a serving `floor` (camp.serving_cost.Floor) the choice
    made without it stands where it meets the floor, whole or (with `config.cascade`) as a cascade
    (`cascade_of`); otherwise only member sets the floor's budget admits are chosen among. Returns (tta, the
    registered selection, whether it is an ensemble, every augmentation's selection)."""
    if floor is not None and config.cascade:  # a cascade keeps every member's answer on the images it passes on
        free = choose(y, options, config, metric, direction)
        tta, selection = free[0], free[1]
        whole = ensemble.average([options[tta][m] for m in selection.members], selection.weights)
        if any(level.meets(selection.members, tta) for level in floor.levels()) or cascade_of(
                selection.members, options["none"], whole, config.cascade, floor=floor, tta=tta) is not None:
            return free
    affordable = None
    if floor is not None:
        affordable, kept, _ = floor.budget
        options = {tta: probabilities for tta, probabilities in options.items() if tta in kept}
    maximize = names.maximizing(direction)
    method = config.ensemble if config.ensemble != "none" else "top_k"
    members_cap = config.max_members if config.ensemble != "none" else 1
    selections = {tta: ensemble.select(y, probabilities, metric, maximize, method, members_cap, config.rounds,
                                       affordable=None if affordable is None else affordable[tta])
                  for tta, probabilities in options.items()}
    tta, selection = _choose(selections, config, direction)
    use_ensemble = _uses_ensemble(selection, config, direction)
    if not use_ensemble:  # the best single candidate under the chosen augmentation
        selection = ensemble.Selection([selection.best_single], [1.0], selection.best_single_value,
                                       selection.best_single, selection.best_single_value)
    return tta, selection, use_ensemble, selections


def heldout_estimate(y: np.ndarray, options: dict[str, list[np.ndarray]], config, metric: str,
                     direction, floor=None) -> tuple[float, float]:
    """`choose` as a procedure (with `config.cascade`, its cascade chosen on the same half), scored on validation
    images it did not choose on (split halves, `config.heldout_splits` splits: camp.ensemble.split_half_estimate):
    (mean, standard error)."""
    def procedure(indices):
        tta, selection, _, _ = choose(y[indices], {name: [p[indices] for p in candidates]
                                                   for name, candidates in options.items()},
                                      config, metric, direction, floor)

        def whole(rows):
            return ensemble.average([options[tta][m][rows] for m in selection.members], selection.weights)
        gated = cascade_of(selection.members, options["none"], whole(indices), config.cascade, indices, floor, tta)
        if gated is None:
            return whole
        gate = options["none"][selection.members[gated.gate]]
        return lambda other: cascade.combine(gate[other], whole(other), gated.threshold)
    return ensemble.split_half_estimate(y, procedure, metric, config.heldout_splits)


CALIBRATION_ROUNDS = 3  # timings of the chosen model per study: each ~2-10 s on 2 cores


def calibrate(y, options: dict, config, metric: str, direction, floor, served_seconds,
              rounds: int = CALIBRATION_ROUNDS):
    """The serving `floor` (camp.serving_cost.Floor) with its estimates scaled to what its choice costs when
    served: the model `choose` and `cascade_of` pick under it is timed (`served_seconds(members, weights, tta,
    gated)`: camp.serving_cost.served_seconds), and where that misses the floor's target the estimates are
    scaled by timing / estimate and the choice is made again, at most `rounds` timings in all. A sum of parts
    timed alone misjudged whole ensembles by -30% to +20% (BENCHMARKS.md). Returns the floor and the timings."""
    timings = []
    for _ in range(rounds):
        tta, selection, _, _ = choose(y, options, config, metric, direction, floor)
        whole = ensemble.average([options[tta][m] for m in selection.members], selection.weights)
        gated = cascade_of(selection.members, options["none"], whole, config.cascade, floor=floor, tta=tta)
        served = served_seconds(selection.members, selection.weights, tta, gated)
        estimated = floor.estimate(selection.members, tta, gated)
        timings.append({"members": len(selection.members), "tta": tta,
                        "exit_share": round(gated.exit_share, 4) if gated else None,
                        "estimated_images_per_second": round(1.0 / estimated, 1),
                        "served_images_per_second": round(1.0 / served, 1)})
        print(f"finalize: serving floor: the choice ({len(selection.members)} member(s), tta {tta}"
              + (f", its gate answering {gated.exit_share:.0%}" if gated else "") + f") served {1.0 / served:.0f} "
              f"images/s, estimated {1.0 / estimated:.0f}; the target is {floor.target:.0f}", flush=True)
        if served <= 1.0 / floor.target:
            break
        floor = floor.calibrated(served, estimated)
    return floor, timings


def report_floor(floor, tta: str, chosen, y, options: dict, config, metric: str, direction, summary: dict) -> None:
    """Print and record the serving `floor`'s choice (camp.serving_cost.Floor) beside the one `choose` makes
    without it, so the floor's price on validation is plain: where the choice is served as a cascade, its
    estimated speed and validation value are the cascade's."""
    free_tta, free, _, _ = choose(y, options, config, metric, direction)
    whole = ensemble.average([options[tta][m] for m in chosen.members], chosen.weights)
    gated = cascade_of(chosen.members, options["none"], whole, config.cascade, floor=floor, tta=tta)
    speed, value, served = 1.0 / floor.estimate(chosen.members, tta, gated), chosen.value, "whole"
    if gated is not None:
        gate = chosen.members[gated.gate]
        value = ensemble.score(y, cascade.combine(options["none"][gate], whole, gated.threshold), metric)
        served = f"as a cascade: its gate answers {gated.exit_share:.0%} of validation images alone"
    summary["serving_floor"] = {
        "min_images_per_second": floor.images_per_second, "target_images_per_second": round(floor.target, 1),
        "estimated_images_per_second": round(speed, 1),
        "value": round(value, 4), "cascade": gated.spec() if gated else None, "without_floor": {
            "value": round(free.value, 4), "tta": free_tta, "members": len(free.members),
            "estimated_images_per_second": round(1.0 / floor.estimate(free.members, free_tta), 1)}}
    for note in floor.budget[2] if gated is None and not floor.meets(free.members, free_tta) else []:
        print(f"finalize: serving floor: {note}")
    print(f"finalize: serving floor {floor.images_per_second:g} images/s (aiming at {floor.target:.0f}, the estimate's "
          f"margin): {metric} {value:.4f} at an estimated "
          f"{speed:.0f} images/s ({len(chosen.members)} member(s), tta {tta}, {served}); without the floor "
          f"{free.value:.4f} at ~{1.0 / floor.estimate(free.members, free_tta):.0f} images/s whole "
          f"({len(free.members)} member(s), tta {free_tta})")


def _uses_ensemble(selection: ensemble.Selection, config, direction) -> bool:
    """Is the ensemble registered, rather than its best single candidate? Two members at least, and a gain
    over that candidate of more than `min_gain`."""
    gain = (selection.value - selection.best_single_value) * names.gain_sign(direction)
    return gain > config.min_gain and len(selection.members) >= 2


def _choose(selections: dict, config, direction) -> tuple[str, ensemble.Selection]:
    """`tta: flip` takes the mirror average whenever it is available; `auto` only where it scores better on
    validation (ties: none, the cheaper model)."""
    if "flip" not in selections:
        return "none", selections["none"]

    def final_value(selection):
        return selection.value if _uses_ensemble(selection, config, direction) else selection.best_single_value
    if config.tta == "flip" or names.better(final_value(selections["flip"]), final_value(selections["none"]), direction):
        return "flip", selections["flip"]
    return "none", selections["none"]


def cascade_of(members, plain: list[np.ndarray], whole: np.ndarray, min_agreement: float,
               rows=slice(None), floor=None, tta: str = "none") -> cascade.Cascade | None:
    """The cascade served with the ensemble of candidates `members` (indices into `plain`, the candidates'
    validation probabilities alone and unmirrored; the cascade's gate is a position in `members`), chosen on
    `rows` of them against the ensemble's probabilities `whole` on those rows (camp.cascade.choose); None where
    `min_agreement` is 0 (no cascade), there is one member, or no gate can answer an image. With a serving
    `floor` (camp.serving_cost.Floor; the ensemble served with `tta`) a cascade only where the whole ensemble
    misses it, and then the one closest to the whole ensemble that meets it (None where none does): its target
    (floor x margin) where a cascade can, else the floor itself."""
    members = list(members)
    if not min_agreement or len(members) < 2:
        return None
    gates = {k: plain[m][rows] for k, m in enumerate(members)}
    if floor is None:
        return cascade.choose(gates, whole, min_agreement)
    for level in floor.levels():  # the floor's target, then (no cascade reaching that) the floor itself
        if level.meets(members, tta):
            return None
        needed = {k: level.exit_share_needed(members, tta, m) for k, m in enumerate(members)}
        needed = {k: share for k, share in needed.items() if share is not None}
        gated = cascade.choose(gates, whole, min_agreement, needed) if needed else None
        if gated is not None:
            return gated
    return None
