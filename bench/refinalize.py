"""finalize again, on a finished `make sweep`'s own trials, with another study file's `study.finalize` (prints
JSON): what `make sweep` with that finalize would have registered from the same trials, without 30 minutes of
training. A change to finalize (a serving floor, a cascade) is measured this way on every seed's trials.

The sweep's folder is copied (its mlruns/: Optuna journal, MLflow database and artifacts, with the copy's paths
rewritten) to `--out`, and the copy's registry is emptied, so the model finalize registers there becomes its
@champion: `bench/champion.py` and `bench/predict.py`, run from `--out`, then read it as after `make sweep`.
The sweep's folder is not changed. Run from the repository root (finalize is this checkout's):

    .venv/bin/python bench/refinalize.py --store ../camp-fresh-9e7253f-s44 --config sweeps/default.yaml \
        --out ../refinalized-s44
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///mlruns/mlflow.db"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# columns of MLflow's database that hold the sweep folder's absolute path
PATH_COLUMNS = {"experiments": ["artifact_location"], "runs": ["artifact_uri"], "model_versions": ["storage_location"],
                "logged_models": ["artifact_location"], "tags": ["value"]}


def copy_store(store: Path, out: Path) -> None:
    """The sweep folder's mlruns/ (and its data link) into `out`, the database's paths pointing at the copy."""
    if out.exists():
        raise ValueError(f"--out {out} exists; give a new folder")
    out.mkdir(parents=True)
    shutil.copytree(store / "mlruns", out / "mlruns", symlinks=True)
    if (store / "data").exists():
        shutil.copytree(store / "data", out / "data", symlinks=True)
    with sqlite3.connect(out / "mlruns" / "mlflow.db") as database:
        tables = {row[0] for row in database.execute("select name from sqlite_master where type = 'table'")}
        for table, columns in PATH_COLUMNS.items():
            for column in columns if table in tables else []:
                database.execute(f"update {table} set {column} = replace({column}, ?, ?)", (str(store), str(out)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, type=Path, help="a finished make sweep's folder (holds mlruns/)")
    parser.add_argument("--config", default="sweeps/default.yaml", type=Path, help="study file whose finalize to use")
    parser.add_argument("--out", required=True, type=Path, help="a new folder for the copy")
    args = parser.parse_args()
    store, out, config = args.store.resolve(), args.out.resolve(), args.config.resolve()
    copy_store(store, out)
    os.chdir(out)

    import mlflow
    import optuna

    from camp import names, registry
    from camp.config import load_study_file
    from camp.finalize import finalize
    from camp.objective import plan_for, with_seed
    from camp.runtime import configure_tensorflow
    from camp.storage import make_storage
    from camp.sweep_summary import summarise

    configure_tensorflow()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    client = mlflow.MlflowClient()
    client.delete_registered_model(registry.MODEL_NAME)  # the copy's registry only
    storage = make_storage(None)
    study_file = load_study_file(config)
    study = optuna.load_study(study_name=study_file.study.name, storage=storage)
    sweep_runs = mlflow.search_runs(experiment_names=["camp"], output_format="list",
                                    filter_string=f"tags.`{names.ROLE}` = 'sweep'")
    seed = int(sweep_runs[0].data.params["seed"])
    plan = plan_for(with_seed(study_file, seed), study_file.study.n_trials, None, None, "data/clothing-small")
    mlflow.set_experiment("camp")
    with mlflow.start_run(run_name=f"refinalize-{study.study_name}",
                          tags={names.STUDY: study.study_name, names.ROLE: "refinalize"}) as parent:
        mlflow.log_artifact(str(config))
        summary = summarise(study, plan, len(study.trials), 0.0)
        finalize(study, plan, summary, storage, parent.info.run_id)
    print(json.dumps({"bench": "refinalize", "store": str(store), "config": str(config), "seed": seed,
                      "out": str(out), **{key: summary.get(key) for key in (
                          "best_value", "best_trial", "ensemble", "serving_floor", "registered_version",
                          "champion_moved")}}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
