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


def choose(y: np.ndarray, options: dict[str, list[np.ndarray]], config, metric: str, direction,
           affordable: dict | None = None):
    """finalize's whole choice on validation labels `y` and candidates' probabilities per augmentation
    (`tta_options`): an ensemble selection per augmentation, the augmentation (`_choose`), and the ensemble or
    its best single candidate (`_uses_ensemble`); with `affordable` ({tta: predicate}, the serving floor's
    budget: camp.serving_cost), only member sets it admits. Returns (tta, the registered selection, whether
    it is an ensemble, every augmentation's selection)."""
    maximize = names.maximizing(direction)
    method = config.ensemble if config.ensemble != "none" else "top_k"
    members_cap = config.max_members if config.ensemble != "none" else 1
    selections = {tta: ensemble.select(y, probabilities, metric, maximize, method, members_cap, config.rounds,
                                       affordable=(affordable or {}).get(tta))
                  for tta, probabilities in options.items()}
    tta, selection = _choose(selections, config, direction)
    use_ensemble = _uses_ensemble(selection, config, direction)
    if not use_ensemble:  # the best single candidate under the chosen augmentation
        selection = ensemble.Selection([selection.best_single], [1.0], selection.best_single_value,
                                       selection.best_single, selection.best_single_value)
    return tta, selection, use_ensemble, selections


def heldout_estimate(y: np.ndarray, options: dict[str, list[np.ndarray]], config, metric: str,
                     direction, affordable: dict | None = None) -> tuple[float, float]:
    """`choose` as a procedure (with `config.cascade`, its cascade chosen on the same half), scored on validation
    images it did not choose on (split halves, `config.heldout_splits` splits: camp.ensemble.split_half_estimate):
    (mean, standard error)."""
    def procedure(indices):
        tta, selection, _, _ = choose(y[indices], {name: [p[indices] for p in candidates]
                                                   for name, candidates in options.items()},
                                      config, metric, direction, affordable)

        def whole(rows):
            return ensemble.average([options[tta][m][rows] for m in selection.members], selection.weights)
        gated = cascade_of(selection.members, options["none"], whole(indices), config.cascade, indices)
        if gated is None:
            return whole
        gate = options["none"][selection.members[gated.gate]]
        return lambda other: cascade.combine(gate[other], whole(other), gated.threshold)
    return ensemble.split_half_estimate(y, procedure, metric, config.heldout_splits)


def report_floor(costs, notes: list[str], tta: str, chosen, y, unconstrained: dict, config, metric: str, direction,
                  summary: dict) -> None:
    """Print and record the serving floor's choice beside the one `choose` makes without it, so the floor's
    price on validation is plain."""
    floor = config.min_images_per_second
    free_tta, free, _, _ = choose(y, unconstrained, config, metric, direction)
    summary["serving_floor"] = {
        "min_images_per_second": floor, "estimated_images_per_second": round(costs.images_per_second(chosen.members, tta), 1),
        "value": round(chosen.value, 4), "without_floor": {
            "value": round(free.value, 4), "tta": free_tta, "members": len(free.members),
            "estimated_images_per_second": round(costs.images_per_second(free.members, free_tta), 1)}}
    for note in notes:
        print(f"finalize: serving floor: {note}")
    print(f"finalize: serving floor {floor:g} images/s: {metric} {chosen.value:.4f} at an estimated "
          f"{costs.images_per_second(chosen.members, tta):.0f} images/s ({len(chosen.members)} member(s), tta {tta}); "
          f"without the floor {free.value:.4f} at ~{costs.images_per_second(free.members, free_tta):.0f} images/s "
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
               rows=slice(None)) -> cascade.Cascade | None:
    """The cascade served with the ensemble of candidates `members` (indices into `plain`, the candidates'
    validation probabilities alone and unmirrored), chosen on `rows` of them against the ensemble's
    probabilities `whole` on those rows (camp.cascade.choose); None where `min_agreement` is 0 (no cascade),
    there is one member, or no gate can answer an image."""
    members = list(members)
    if not min_agreement or len(members) < 2:
        return None
    return cascade.choose({k: plain[m][rows] for k, m in enumerate(members)}, whole, min_agreement)
