"""Where a registered model's serving time goes, stage by stage (prints one JSON object): the model (the
champion by default) is served as registration serves it (int8 or float32 flatbuffers where its bundle has
them) on distinct 256-image client batches of test images (base64, as `make serve` receives them). It is
timed first as is (batch images per second), then with a timer around each stage: vetting the values,
decoding, preprocessing, and each member's model (its test-time views included; an ensemble's HOG members
that share a feature shape compute the features once per request, so the first of them carries that cost).
Per-image milliseconds; `other` is what no stage accounts for (averaging, the DataFrame-free glue). With
`--whole` an ensemble's cascade is switched off, to see what the full ensemble costs.

    .venv/bin/python bench/serving_stages.py [--model models:/camp-classifier@champion] [--whole] [--batches 6]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/camp-classifier@champion")
    parser.add_argument("--whole", action="store_true", help="serve an ensemble without its cascade")
    parser.add_argument("--batches", type=int, default=6, help="client batches, the first a warm-up")
    args = parser.parse_args()
    import mlflow

    from camp import registry, run_config, serving_input
    from camp.registry import CampClassifier, client_batches, seconds_per_image
    from camp.runtime import configure_tensorflow

    configure_tensorflow()
    with tempfile.TemporaryDirectory() as directory:
        bundle = Path(mlflow.artifacts.download_artifacts(artifact_uri=args.model, dst_path=directory)) / "artifacts"
        served = CampClassifier().load_bundle(bundle / "bundle")
        if args.whole and served.cascade is not None:
            served.cascade = None
        dataset, _ = run_config.prepare_dataset(run_config.run_config_from_meta(
            json.loads((bundle / "bundle" / "camp.json").read_text())))
        batches = client_batches([item.path for item in dataset.split("test")], count=args.batches)
        members = served.members or [served]
        result = {"bench": "serving_stages", "model": args.model, "cpus": os.cpu_count(), "batch": len(batches[0]),
                  "tta": served.tta, "cascade": served.cascade is not None,
                  "images_per_second": round(1.0 / seconds_per_image(served.probabilities, batches), 1)}

        spent: collections.Counter = collections.Counter()
        names = {id(member.model): f"{position}: {type(member.model).__name__}"
                 + (f" {member.model.precision}" if hasattr(member.model, "precision") else "")
                 for position, member in enumerate(members)}

        def timed(function, key_of):
            def wrapper(*call_args, **call_kwargs):
                started = time.perf_counter()
                try:
                    return function(*call_args, **call_kwargs)
                finally:
                    spent[key_of(*call_args)] += time.perf_counter() - started
            return wrapper

        # camp.registry looks these up at each call (serving_input's through the module)
        serving_input.decoded = timed(serving_input.decoded, lambda *a: "decode")
        serving_input.model_inputs = timed(serving_input.model_inputs, lambda *a: "preprocess")
        registry.predict_probabilities = timed(registry.predict_probabilities, lambda model, *a: names[id(model)])
        serving_input.vet = timed(serving_input.vet, lambda *a: "vet")
        served.probabilities(batches[0])
        spent.clear()
        started = time.perf_counter()
        for batch in batches[1:]:
            served.probabilities(batch)
        images = len(batches[0]) * (len(batches) - 1)
        total = time.perf_counter() - started
        result["ms_per_image"] = {key: round(1000 * value / images, 3) for key, value in spent.items()}
        result["ms_per_image"]["other"] = round(1000 * (total - sum(spent.values())) / images, 3)
        result["ms_per_image_timed_total"] = round(1000 * total / images, 3)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
