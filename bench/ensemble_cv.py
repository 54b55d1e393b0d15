"""Which ensemble selection holds up on images it did not choose on? Split-half cross-validation on a
study's own validation predictions: each strategy (the best single trial, plain top-k, Caruana with a
member cap and a number of rounds) selects on one random half of the validation images and is scored
on the other half, both ways, over many random splits. Validation only: test is never read. Prints one
JSON object per store.

    .venv/bin/python bench/ensemble_cv.py STORE_DIR [STORE_DIR ...] [--splits 200]

STORE_DIR is a checkout whose mlruns/ holds a finished `default` study (e.g. the clones
`bench/fresh_sweeps.sh` leaves).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STRATEGIES = [("best single", "top_k", 1, 1), ("top 3", "top_k", 3, 1), ("top 5", "top_k", 5, 1),
              ("caruana 3 / 10 rounds", "caruana", 3, 10), ("caruana 5 / 20 rounds", "caruana", 5, 20),
              ("caruana 7 / 20 rounds", "caruana", 7, 20)]


def study_predictions(store: Path, name: str) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """(labels, [probabilities per complete trial], trial numbers) on the study's validation images."""
    import mlflow
    import optuna

    mlflow.set_tracking_uri(f"sqlite:///{store.resolve()}/mlruns/mlflow.db")
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(store / "mlruns" / "optuna.journal")))
    study = optuna.load_study(study_name=name, storage=storage)
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE" and "mlflow_run_id" in t.user_attrs),
                      key=lambda t: -t.value)
    documents = [mlflow.artifacts.load_dict(f"runs:/{t.user_attrs['mlflow_run_id']}/val_predictions.json")
                 for t in complete]
    return (np.asarray(documents[0]["y_true"]), [np.asarray(d["probabilities"]) for d in documents],
            [t.number for t in complete])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+", type=Path)
    parser.add_argument("--study", default="default")
    parser.add_argument("--splits", type=int, default=200)
    args = parser.parse_args()

    from camp import ensemble

    for store in args.stores:
        y, candidates, numbers = study_predictions(store, args.study)
        rng = np.random.default_rng(0)
        scores: dict[str, list[float]] = {name: [] for name, *_ in STRATEGIES}
        for _ in range(args.splits):
            order = rng.permutation(len(y))
            halves = order[: len(y) // 2], order[len(y) // 2:]
            for chosen_on, scored_on in (halves, halves[::-1]):
                for name, method, members, rounds in STRATEGIES:
                    selection = ensemble.select(y[chosen_on], [p[chosen_on] for p in candidates], "val/macro_f1",
                                                True, method, members, rounds)
                    combined = ensemble.average([candidates[m][scored_on] for m in selection.members],
                                                selection.weights)
                    scores[name].append(ensemble.score(y[scored_on], combined, "val/macro_f1"))
        print(json.dumps({"store": str(store), "trials": numbers, "splits": args.splits,
                          "held_out_macro_f1": {name: {"mean": round(float(np.mean(values)), 4),
                                                       "se": round(float(np.std(values) / np.sqrt(len(values))), 4)}
                                                for name, values in scores.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
