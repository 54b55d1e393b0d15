"""How well finalize's serving-cost estimate (camp.serving_cost) predicts a registered model's batch
throughput: each member of the served bundle is timed alone, split into preprocessing and model as
finalize does, and the sum is compared with the whole bundle timed as served, with and without flip
test-time augmentation, on the same 256 validation images sent as client bytes (prints JSON).

    .venv/bin/python bench/serving_cost.py [--model models:/camp-classifier@champion] [--data data/clothing-small]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/camp-classifier@champion")
    parser.add_argument("--data", default="data/clothing-small")
    args = parser.parse_args()
    import mlflow

    from camp import data, registry
    from camp.serving_cost import Costs, add

    paths = [item.path for item in data.load_dataset(args.data).split("validation")]
    batches = registry.client_batches(paths)
    bundle = Path(mlflow.artifacts.download_artifacts(artifact_uri=args.model)) / "artifacts" / "bundle"
    served = registry.CampClassifier().load_bundle(bundle)
    members = served.members or [served]
    registered_tta = members[0].tta
    costs = Costs([], [], {})
    for member in members:
        member.tta = "none"
        add(costs, member, batches)
    result = {"bench": "serving_cost", "model": args.model, "members": len(members), "tta": registered_tta,
              "member_alone_images_per_second": [round(costs.images_per_second({m}, "none"), 1) for m in range(len(members))],
              "member_model_ms": [round(1000 * s, 3) for s in costs.model_seconds],
              "preprocessing_ms": [round(1000 * s, 3) for s in costs.preprocess_seconds.values()]}
    for tta in ("none", "flip"):
        for member in members:
            member.tta = tta
        result[f"tta {tta}"] = {"estimated_images_per_second": round(costs.images_per_second(range(len(members)), tta), 1),
                                "measured_images_per_second": round(registry.served_images_per_second(served, paths), 1)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
