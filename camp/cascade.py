"""A confidence cascade for a registered ensemble: one member, the gate, scores every image once, alone and
without test-time augmentation; where its top probability reaches a threshold its probabilities are served,
and only the other images go through the whole ensemble (the gate's pass is reused there, so no image costs
more than the ensemble alone). The ensemble's cost is paid only for the images its gate is unsure of.

The threshold is the lowest at which the cascade's validation labels agree with the full ensemble's on at
least `min_agreement` of the images (the bar `camp.quantize` holds int8 weights to), and the gate is the
member that then answers the most validation images. Under a serving floor (camp.serving_cost.Floor) it is
instead the highest threshold at which the gate answers the share of images the floor needs, and the gate
the member that changes the fewest of the ensemble's labels there: as close to the whole ensemble as the
floor allows. Pure NumPy: finalize chooses it from the members'
logged validation probabilities, the served model (`camp.registry`) applies it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

MIN_AGREEMENT = 0.99


@dataclasses.dataclass(frozen=True)
class Cascade:
    """`gate` (member index) answers an image alone where its top probability is >= `threshold`; on the
    validation images it was chosen on, that was `exit_share` of them, and the cascade's labels matched
    the ensemble's on `agreement` of them."""

    gate: int
    threshold: float
    exit_share: float
    agreement: float

    def spec(self) -> dict:
        """What `ensemble.json` records (the served model reads `gate` and `threshold`)."""
        return {"gate": self.gate, "threshold": self.threshold, "exit_share": round(self.exit_share, 4),
                "agreement": round(self.agreement, 4)}


def from_spec(spec: dict | None, members: int, where: str) -> Cascade | None:
    """`ensemble.json`'s `cascade` entry (None: the ensemble serves every image); a bad one is a ValueError
    naming `where`."""
    if spec is None:
        return None
    try:
        gate, threshold = spec["gate"], float(spec["threshold"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: cascade needs a member index `gate` and a `threshold`, got {spec!r}") from None
    if isinstance(gate, bool) or not isinstance(gate, int) or not 0 <= gate < members:
        raise ValueError(f"{where}: cascade gate must be a member index in [0, {members}), got {gate!r}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"{where}: cascade threshold must be in (0, 1], got {threshold}")
    return Cascade(gate, threshold, float(spec.get("exit_share", math.nan)), float(spec.get("agreement", math.nan)))


def exits(gate_probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Which rows the gate answers alone (NaN rows, unreadable items, never do)."""
    confidence = np.nan_to_num(np.asarray(gate_probabilities), nan=-1.0).max(axis=1)
    return confidence >= threshold


def combine(gate_probabilities: np.ndarray, ensemble_probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """What the cascade serves: the gate's probabilities on the rows it answers, the ensemble's elsewhere."""
    combined = np.array(ensemble_probabilities, dtype=np.float64, copy=True)
    answered = exits(gate_probabilities, threshold)
    combined[answered] = np.asarray(gate_probabilities)[answered]
    return combined


def _ranked(gate_probabilities: np.ndarray, ensemble_labels: np.ndarray):
    """The gate's confidences from highest down, how many of `ensemble_labels` the gate changes by then, and
    where a run of tied confidences ends (only there can a threshold fall: ties exit together)."""
    gate_probabilities = np.asarray(gate_probabilities, dtype=np.float64)
    count = len(ensemble_labels)
    if count == 0 or gate_probabilities.shape[0] != count:
        raise ValueError(f"cascade: {gate_probabilities.shape[0]} gate rows for {count} ensemble labels")
    confidence = gate_probabilities.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    changed = np.cumsum(gate_probabilities.argmax(axis=1)[order] != np.asarray(ensemble_labels)[order])
    sorted_confidence = confidence[order]
    boundary = np.append(sorted_confidence[:-1] > sorted_confidence[1:], True)
    return sorted_confidence, changed, boundary


def _threshold_after(sorted_confidence: np.ndarray, last: int) -> float:
    """The threshold that lets the `last + 1` most confident images exit: midway to the next lower confidence,
    because the served model's own numbers (int8 weights, another machine's rounding) differ from the logged
    ones by a little, and an image exactly at the threshold would flip."""
    below = sorted_confidence[last + 1] if last + 1 < len(sorted_confidence) else sorted_confidence[last] - 1e-3
    return float((sorted_confidence[last] + below) / 2)


def _allowed(min_agreement: float, count: int) -> int:
    return math.floor((1.0 - min_agreement) * count + 1e-9)


def threshold_for(gate_probabilities: np.ndarray, ensemble_labels: np.ndarray,
                  min_agreement: float = MIN_AGREEMENT) -> tuple[float, int] | None:
    """The lowest threshold on the gate's top probability at which the gate, answering the images at or
    above it, changes at most (1 - `min_agreement`) of `ensemble_labels`: (threshold, images it answers),
    or None when it can answer none."""
    sorted_confidence, changed, boundary = _ranked(gate_probabilities, ensemble_labels)
    valid = np.flatnonzero((changed <= _allowed(min_agreement, len(changed))) & boundary)
    if len(valid) == 0:
        return None
    last = int(valid[-1])
    return _threshold_after(sorted_confidence, last), last + 1


def threshold_at_least(gate_probabilities: np.ndarray, ensemble_labels: np.ndarray, min_exit_share: float,
                       min_agreement: float = MIN_AGREEMENT) -> tuple[float, int, int] | None:
    """The highest threshold at which the gate answers at least `min_exit_share` of the images (what a serving
    floor needs of it), if it changes at most (1 - `min_agreement`) of `ensemble_labels` there: (threshold,
    images it answers, labels it changes), or None. Answering fewer images never changes more labels, so this
    is the cascade closest to the whole ensemble that is fast enough."""
    sorted_confidence, changed, boundary = _ranked(gate_probabilities, ensemble_labels)
    count = len(changed)
    needed = max(1, math.ceil(min_exit_share * count - 1e-9))
    enough = np.flatnonzero(boundary & (np.arange(1, count + 1) >= needed))
    if needed > count or len(enough) == 0 or changed[enough[0]] > _allowed(min_agreement, count):
        return None
    last = int(enough[0])
    return _threshold_after(sorted_confidence, last), last + 1, int(changed[last])


def choose(gates: dict[int, np.ndarray], ensemble_probabilities: np.ndarray,
           min_agreement: float = MIN_AGREEMENT, min_exit_shares: dict[int, float] | None = None) -> Cascade | None:
    """The cascade over candidate gates ({member index: its validation probabilities served alone, without
    augmentation}) whose gate answers the most validation images within `min_agreement` of the ensemble's
    labels (ties: the lower index); None where no gate answers any image.

    With `min_exit_shares` ({member index: the least share of images it must answer}, a serving floor's need:
    camp.serving_cost.Floor) only those gates are tried, each at the highest threshold that answers its share,
    and the one that changes the fewest labels there wins (ties: fewer images answered, then the lower index)."""
    if not 0.0 < min_agreement <= 1.0:
        raise ValueError(f"cascade: min_agreement must be in (0, 1], got {min_agreement}")
    ensemble_probabilities = np.asarray(ensemble_probabilities, dtype=np.float64)
    labels = ensemble_probabilities.argmax(axis=1)
    best, best_key = None, None
    for member in sorted(gates if min_exit_shares is None else set(gates) & set(min_exit_shares)):
        if min_exit_shares is None:
            found = threshold_for(gates[member], labels, min_agreement)
            key = None if found is None else (-found[1],)
        else:
            found = threshold_at_least(gates[member], labels, min_exit_shares[member], min_agreement)
            key = None if found is None else (found[2], found[1])
        if found is not None and (best is None or key < best_key):
            best, best_key = (member, found[0], found[1]), key
    if best is None:
        return None
    member, threshold, answered = best
    served = combine(gates[member], ensemble_probabilities, threshold)
    return Cascade(member, threshold, answered / len(labels), float((served.argmax(axis=1) == labels).mean()))
