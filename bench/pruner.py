"""Does a trial's value at epoch k predict its final value? Spearman rank correlation, per signal
(`val/macro_f1`, `val/loss`, `val/accuracy`) and epoch, over the complete CNN trials of one or more
camp MLflow stores (e.g. the clones `bench/fresh_sweeps.sh` leaves). Prints one JSON object.

    .venv/bin/python bench/pruner.py STORE_DIR [STORE_DIR ...] [--epochs 2,4,6,8,10,12,16]

STORE_DIR is a checkout whose `mlruns/mlflow.db` holds sweeps. Only trials that ran every listed
epoch and completed are used; the final value is the trial's objective (its selected epoch's
val/macro_f1). val/loss is negated, so a positive correlation means "ranks like the final value".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIGNALS = ("val/macro_f1", "val/loss", "val/accuracy")


def histories(store: Path) -> list[dict]:
    """{signal: [value per epoch]}, plus 'final', for each complete CNN trial run in the store."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store.resolve()}/mlruns/mlflow.db")
    out = []
    for experiment in client.search_experiments():
        runs = client.search_runs([experiment.experiment_id], "tags.`optuna.state` = 'COMPLETE'", max_results=5000)
        for run in runs:
            if run.data.params.get("model.family", "cnn") != "cnn":
                continue
            record = {"final": run.data.metrics.get("val/macro_f1"), "run": run.info.run_id, "store": str(store)}
            for signal in SIGNALS:
                history = sorted(client.get_metric_history(run.info.run_id, signal), key=lambda m: m.step)
                # the last logged step is the selected epoch's value, logged after training: leave it out
                steps = {m.step: m.value for m in history}
                last = max(steps) if steps else -1
                record[signal] = [steps[step] for step in sorted(steps) if step < last]
            record["epochs"] = len(record["val/loss"])
            out.append(record)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+", type=Path)
    parser.add_argument("--epochs", default="2,4,6,8,10,12,14,16,18")
    args = parser.parse_args()
    from scipy.stats import spearmanr

    records = [record for store in args.stores for record in histories(store)]
    epochs = [int(e) for e in args.epochs.split(",")]
    result = {"trials": len(records), "stores": [str(s) for s in args.stores], "by_signal": {}}
    for signal in SIGNALS:
        row = {}
        for epoch in epochs:
            usable = [r for r in records if len(r[signal]) >= epoch and r["final"] is not None]
            if len(usable) < 3:
                continue
            values = [r[signal][epoch - 1] * (-1 if signal == "val/loss" else 1) for r in usable]
            rho = spearmanr(values, [r["final"] for r in usable]).statistic
            row[str(epoch)] = {"spearman": None if rho != rho else round(float(rho), 3), "n": len(usable)}
        result["by_signal"][signal] = row
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
