"""An ensemble served whole and as a confidence cascade (`camp.cascade`), side by side in one process (prints
JSON): the cascade finalize would choose from the members' logged validation probabilities; batch throughput
of both on distinct 256-image client batches of test images (base64, as `make serve` receives them), timed in
turn; and on test, both models' macro-F1, how often their labels agree, and the paired bootstrap interval of
the difference. Both are served as registration serves them (int8 or float32 flatbuffers where their labels
hold: camp.quantize). Works on copies; the registry is not changed. Test is for reporting only.

    .venv/bin/python bench/cascade.py [--model models:/camp-classifier@champion | --run ENSEMBLE_RUN_ID]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def bundle_of(args, directory: str) -> Path:
    import mlflow

    if args.run:
        return Path(mlflow.artifacts.download_artifacts(run_id=args.run, artifact_path="bundle", dst_path=directory))
    artifacts = Path(mlflow.artifacts.download_artifacts(artifact_uri=args.model, dst_path=directory)) / "artifacts"
    return artifacts / "bundle"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/camp-classifier@champion")
    parser.add_argument("--run", default=None, help="an ensemble run (e.g. a distilled student's teacher) instead")
    parser.add_argument("--rounds", type=int, default=2, help="times each way is timed, in turn")
    parser.add_argument("--min-agreement", type=float, default=None)
    args = parser.parse_args()
    import mlflow

    from camp import cascade, ensemble, metrics, quantize, run_config
    from camp.registry import CampClassifier, client_batches, seconds_per_image
    from camp.runtime import configure_tensorflow

    configure_tensorflow()
    os.environ.pop(quantize.FLOAT_ENV, None)
    with tempfile.TemporaryDirectory() as directory:
        source = bundle_of(args, directory)
        # the dataset as the members trained on it (label map, exclusions), as bench/champion.py scores it
        dataset, _ = run_config.prepare_dataset(run_config.run_config_from_meta(
            json.loads((source / "camp.json").read_text())))
        validation = [item.path for item in dataset.split("validation")]
        test_items = dataset.split("test")
        spec = json.loads((source / "ensemble.json").read_text())
        logged = [mlflow.artifacts.load_dict(f"runs:/{run}/val_predictions.json") for run in spec["runs"]]
        key = "probabilities_flip" if spec.get("tta") == "flip" else "probabilities"
        full_validation = ensemble.average([np.asarray(p[key]) for p in logged], spec["weights"])
        gates = {index: np.asarray(p["probabilities"]) for index, p in enumerate(logged)}
        chosen = cascade.choose(gates, full_validation, args.min_agreement or cascade.MIN_AGREEMENT)
        result = {"bench": "cascade", "model": args.run or args.model, "cpus": os.cpu_count(),
                  "members": spec["members"], "weights": spec["weights"], "tta": spec.get("tta", "none"),
                  "chosen": chosen.spec() if chosen else None}
        if chosen is None:
            print(json.dumps(result, indent=2))
            return 0
        whole, gated = Path(directory) / "whole", Path(directory) / "cascade"
        shutil.copytree(source, whole, ignore=shutil.ignore_patterns(quantize.LITE_FILE))
        (whole / "ensemble.json").write_text(json.dumps({**spec, "cascade": None}, indent=2))
        result["serving"] = quantize.quantize_bundle(whole, validation, CampClassifier().load_bundle)
        shutil.copytree(whole, gated)
        (gated / "ensemble.json").write_text(json.dumps({**spec, "cascade": chosen.spec()}, indent=2))
        ways = {"ensemble": CampClassifier().load_bundle(whole), "cascade": CampClassifier().load_bundle(gated)}
        batches = client_batches([item.path for item in test_items])
        rates = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, served in ways.items():
                rates[name].append(round(1.0 / seconds_per_image(served.probabilities, batches), 1))
        labels = list(dataset.labels)
        y = np.array([item.label for item in test_items])
        predicted = {}
        for name, served in ways.items():
            output = served.predict_files([item.path for item in test_items])
            predicted[name] = np.array([labels.index(label) for label in output["label"]])
            result[name] = {"images_per_second": rates[name], "median": float(np.median(rates[name])),
                            "test_macro_f1": round(metrics.value("test/macro_f1", y, predicted[name]), 4)}
        gate_share = cascade.exits(_gate_probabilities(ways["cascade"], test_items), chosen.threshold).mean()
        difference, low, high = metrics.paired_bootstrap("test/macro_f1", y, predicted["cascade"], predicted["ensemble"],
                                                         resamples=2000)
        result["test"] = {"labels_agree": round(float((predicted["cascade"] == predicted["ensemble"]).mean()), 4),
                          "gate_answers": round(float(gate_share), 4), "n": len(y),
                          "cascade_minus_ensemble": round(difference, 4), "ci95": [round(low, 4), round(high, 4)]}
        result["speedup"] = round(result["cascade"]["median"] / result["ensemble"]["median"], 2)
    print(json.dumps(result, indent=2))
    return 0


def _gate_probabilities(served, items) -> np.ndarray:
    """The gate member's own probabilities (alone, no augmentation) on `items`."""
    gate = served.members[served.cascade.gate]
    tta, gate.tta = gate.tta, "none"
    try:
        return gate.predict_files([item.path for item in items])[[f"p_{label}" for label in gate.labels]].to_numpy()
    finally:
        gate.tta = tta


if __name__ == "__main__":
    raise SystemExit(main())
