"""What retraining on train + validation did (`study.finalize.train_on_validation`): the registered
champion, whose members were retrained so, against the same ensemble (same members, weights and
test-time augmentation) built from the runs they were chosen as, fit on train only; test macro-F1 of
both and the paired bootstrap of the difference (prints JSON). Test is reported, never used to choose.

    .venv/bin/python bench/refit_full.py [--model models:/camp-classifier@champion] [--bootstrap 2000]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/camp-classifier@champion")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    import mlflow

    from camp import metrics, names, tracking
    from camp.evaluation import split_predictions
    from camp.registry import CampClassifier, resolve_version
    from camp.run_config import prepare_dataset, run_config_from_meta

    tracking.setup(create=False)
    version = resolve_version(args.model)
    run = mlflow.get_run((version.tags or {}).get(names.RUN_ID) or version.run_id)
    if run.data.tags.get(names.FIT_ON) != names.TRAIN_AND_VALIDATION:
        raise SystemExit(f"{args.model}: not fit on train + validation (tag {names.FIT_ON} is "
                         f"{run.data.tags.get(names.FIT_ON)!r}); nothing to compare")
    with tempfile.TemporaryDirectory() as directory:
        bundle = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="bundle",
                                                          dst_path=str(Path(directory) / "retrained")))
        spec = json.loads((bundle / "ensemble.json").read_text())
        # the same ensemble from the runs the members were chosen as: each member's bundle swapped for its source's
        original = Path(directory) / "original"
        shutil.copytree(bundle, original)
        sources = []
        for name, member_run in zip(spec["members"], spec["runs"]):
            source = mlflow.get_run(member_run).data.tags[names.SOURCE_RUN]
            sources.append(source)
            shutil.rmtree(original / "members" / name)
            mlflow.artifacts.download_artifacts(run_id=source, artifact_path="bundle",
                                                dst_path=str(Path(directory) / f"src-{name}"))
            shutil.copytree(Path(directory) / f"src-{name}" / "bundle", original / "members" / name)
        meta = json.loads((bundle / "camp.json").read_text())
        dataset, _ = prepare_dataset(run_config_from_meta(meta))
        scored = {what: split_predictions(CampClassifier().load_bundle(path), dataset, "test")
                  for what, path in (("retrained", bundle), ("fit_on_train", original))}
    y = np.asarray(scored["retrained"]["y_true"])
    if scored["fit_on_train"]["relpaths"] != scored["retrained"]["relpaths"]:
        raise SystemExit("the two models read different test images")
    values = {what: round(metrics.value("val/macro_f1", y, s["probabilities"].argmax(axis=1)), 4)
              for what, s in scored.items()}
    difference, low, high = metrics.paired_bootstrap("val/macro_f1", y, scored["retrained"]["probabilities"],
                                                     scored["fit_on_train"]["probabilities"], args.bootstrap)
    print(json.dumps({"bench": "refit_full", "model": args.model, "version": version.version,
                      "members": spec["trials"], "weights": spec["weights"], "tta": spec.get("tta", "none"),
                      "source_runs": sources, "test_macro_f1": values, "n_test": int(len(y)),
                      "retrained_minus_fit_on_train": {"difference": round(difference, 4),
                                                       "ci95": [round(low, 4), round(high, 4)]}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
