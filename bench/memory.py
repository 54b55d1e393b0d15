"""Memory across a sweep: resident memory of the process that runs the trials, after every trial of a
30-trial study, and whether it stays flat (no growth per trial). Prints one JSON object.

    .venv/bin/python bench/memory.py --trials 3 --max-per-class 10 --max-epochs 1      # dev, ~20 s
    .venv/bin/python bench/memory.py --max-per-class 60                                 # 30 smoke trials, ~5 min
    .venv/bin/python bench/memory.py --config sweeps/default.yaml --max-per-class 40 --max-epochs 3

The trials run in this process through camp's real sweep code (`camp.sweep.run_worker`: seeded sampler,
pruner, `make_objective`, `train(config)` per trial, `gc_after_trial`), i.e. what one `camp sweep` worker
does, on a fresh SQLite MLflow store, Optuna journal and empty $CAMP_CACHE in a temporary directory (nothing
touches ./mlruns). The study file (default sweeps/smoke.yaml: mode and a few model knobs, 2 epochs, median
pruner) is loaded with camp's `load_study_file` and changed with `dataclasses.replace` (bench/sweep.py's
`build_plan`): `--trials`, `--max-per-class` (data.max_per_class), `--max-epochs` (caps model.max_epochs).

Per trial, read after the trial has finished and Optuna's `gc_after_trial` has run (camp.sweep.Progress, the
per-trial callback run_worker installs, is wrapped to take the reading first):
- `rss_mb`: VmRSS of /proc/self/status now (`anon_mb` / `file_mb`: its RssAnon / RssFile parts; the decoded
  cache is memory-mapped from disk, so its pages count as file-backed and the OS can drop them);
- `peak_mb`: VmHWM, the high-water mark of RSS so far (= getrusage ru_maxrss);
- `py_objects`: objects the garbage collector tracks (growth here points at Python-level references kept);
- `mlflow_rss_mb`: `system/rss_mb`, which train() logs itself (after fitting, before the pictures and the
  model bundle are written; pruned trials log none).
`object_types_growing_trial_W_to_N`: the object types whose count grew most from trial W (the warm-up) to
trial N, from a census of gc-tracked objects taken at both (after the reading): the lead to follow when the
verdict is `growing`.

Known growth, fixed (Keras 3.15 / TensorFlow 2.21 as installed): ~19 MB and ~29,000 Python objects per trial
at the smoke size, nearly all TensorFlow graph objects. Keras's TensorFlow optimizer all-reduces the gradients
through `tf.distribute`'s replica context even without a strategy, which wraps them in `tf.custom_gradient`;
traced inside `tf.function` that registers a `CustomGradient-<uid>` entry in TensorFlow's global gradient
registry (`tensorflow.python.framework.ops.gradient_registry`) that is never removed, and its closure holds
tensors of the traced train step, so each trial's whole train-step graph (~66 FuncGraphs) stays alive after the
model is gone; `keras.backend.clear_session()` does not remove it. `camp.runtime.released_custom_gradients`
removes the entries a run added once it ends. `--keep-custom-gradients` switches that off, to measure the
growth it removes side by side.

Verdict (after `--warmup` trials, default 10, so TensorFlow's one-off start-up, the decoded cache and the
first models of each input shape are paid): least-squares slope of rss_mb over trials warmup..N (MB/trial),
growth of rss_mb and of peak_mb from trial `warmup` to trial N. `flat` when the slope is below 1 MB/trial
(under 40 MB over make sweep's 40 trials, ~2% of a ~1.7 GB trial process) and peak_mb grew under 5% after the
warm-up. A study whose input shapes vary (default.yaml: size 32-64, colour) can raise the peak late by
drawing a larger configuration for the first time: that is not a leak, so check `input` per trial.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from camp import names  # noqa: E402 - after the path: the bench runs from a checkout

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

SLOPE_LIMIT_MB = 1.0  # per trial, after the warm-up
PEAK_GROWTH_LIMIT = 0.05  # peak RSS growth after the warm-up, as a fraction


def log(message: str) -> None:
    print(f"[bench/memory {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def memory_now() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile") and value.strip().endswith("kB"):
            fields[key] = int(value.split()[0]) / 1024.0
    return {"rss_mb": round(fields.get("VmRSS", float("nan")), 1),
            "anon_mb": round(fields.get("RssAnon", float("nan")), 1),
            "file_mb": round(fields.get("RssFile", float("nan")), 1),
            "peak_mb": round(fields.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0), 1)}


@contextlib.contextmanager
def stdout_to_stderr():
    """camp prints progress on stdout (Python and TensorFlow's C++ alike): send file descriptor 1 to 2 so
    stdout carries only the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def least_squares_slope(xs, ys) -> float | None:
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sweeps/smoke.yaml", help="study file")
    parser.add_argument("--data", help="dataset folder (default: data.path, $CAMP_DATA, data/clothing-small)")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10, help="trials before the growth is measured")
    parser.add_argument("--max-per-class", type=int, help="data.max_per_class (shrinks every trial)")
    parser.add_argument("--max-epochs", type=int, help="cap model.max_epochs")
    parser.add_argument("--pruner", choices=("median", "hyperband", "none"), help="override the study's pruner")
    parser.add_argument("--keep-custom-gradients", action="store_true",
                        help="diagnostic: switch off camp.train's release of the CustomGradient-* entries each run adds "
                             "to TensorFlow's global gradient registry, to see the leak it fixes (module docstring)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store (MLflow, journal, cache)")
    args = parser.parse_args()
    if args.trials < 2:
        parser.error("--trials must be >= 2")
    warmup = max(1, min(args.warmup, args.trials - 1))

    from sweep import absolute_exclude, build_plan, data_root, make_store  # bench/sweep.py

    config = str(Path(args.config).resolve())  # the run goes on in a temporary directory
    data = data_root(args.data, config)
    exclude = absolute_exclude(config)
    work = Path(tempfile.mkdtemp(prefix="camp-bench-memory-"))
    store = make_store(work)
    os.environ.update({"MLFLOW_TRACKING_URI": store["MLFLOW_TRACKING_URI"], "CAMP_CACHE": store["CAMP_CACHE"]})
    os.chdir(work)
    name = "bench-memory"
    plan = build_plan(config, name=name,
                      n_trials=args.trials, storage_url=store["storage"], data_path=data, pruner=args.pruner,
                      max_per_class=args.max_per_class, max_epochs=args.max_epochs, exclude=exclude)

    import mlflow
    import optuna

    import camp.sweep as sweep
    from camp import tracking
    from camp.storage import make_storage

    before_imports = memory_now()
    import keras  # noqa: F401 - the first trial would import it; counted before the first reading instead
    import tensorflow  # noqa: F401

    readings: list[dict] = []
    snapshots: dict = {}
    started = time.time()

    class RecordingProgress(sweep.Progress):
        def __call__(self, study, trial):
            reading = {"trial": trial.number, "state": trial.state.name,
                       "value": None if trial.value is None else round(trial.value, 4),
                       "elapsed_s": round(time.time() - started, 1), **memory_now(),
                       "py_objects": len(gc.get_objects()),
                       "input": _input_of(trial.params, plan)}
            readings.append(reading)
            if len(readings) in (warmup, args.trials):
                snapshots[len(readings)] = object_types()
            super().__call__(study, trial)

    sweep.Progress = RecordingProgress  # run_worker builds its per-trial callback from camp.sweep.Progress
    if args.keep_custom_gradients:  # camp.train looks the context manager (camp.runtime's) up at each run
        import camp.train

        camp.train.released_custom_gradients = contextlib.nullcontext
    tracking.setup()
    storage = make_storage(store["storage"])
    optuna.create_study(study_name=name, storage=storage, direction=plan.study_file.study.direction)
    start_memory = memory_now()
    log(f"{args.trials} trials of {args.config} in process {os.getpid()}; store {work}")
    with stdout_to_stderr(), mlflow.start_run(run_name=f"sweep-{name}", tags={names.ROLE: "sweep"}) as parent:
        sweep.run_worker(plan, parent.info.run_id, 0, 1)
    wall = time.time() - started
    logged = {}
    for run in mlflow.search_runs(experiment_names=["camp"], output_format="list", max_results=10_000):
        if run.data.tags.get(names.TRIAL) is not None:
            logged[int(run.data.tags[names.TRIAL])] = run.data.metrics.get("system/rss_mb")
    for reading in readings:
        reading["mlflow_rss_mb"] = logged.get(reading["trial"])

    n = len(readings)
    result: dict = {"bench": "memory", "command": " ".join([".venv/bin/python", "bench/memory.py", *sys.argv[1:]]),
                    "config": args.config, "data": data, "trials": n, "warmup": warmup,
                    "max_per_class": args.max_per_class, "max_epochs": args.max_epochs,
                    "pruner": plan.study_file.study.pruner.name, "keep_custom_gradients": args.keep_custom_gradients,
                    "wall_s": round(wall, 1),
                    "before_imports": before_imports, "before_first_trial": start_memory,
                    "states": {state: sum(r["state"] == state for r in readings)
                               for state in ("COMPLETE", "PRUNED", "FAIL")}}
    if n > warmup:
        tail = readings[warmup - 1:]  # trial `warmup` (1-based) .. trial N
        xs = [warmup + i for i in range(len(tail))]
        slope = least_squares_slope(xs, [r["rss_mb"] for r in tail])
        anon_slope = least_squares_slope(xs, [r["anon_mb"] for r in tail])
        objects_slope = least_squares_slope(xs, [r["py_objects"] for r in tail])
        first, last = tail[0], tail[-1]
        peak_growth = (last["peak_mb"] - first["peak_mb"]) / first["peak_mb"]
        result.update({
            "rss_slope_mb_per_trial": round(slope, 2), "anon_slope_mb_per_trial": round(anon_slope, 2),
            "py_objects_slope_per_trial": round(objects_slope, 1),
            f"rss_growth_mb_trial_{warmup}_to_{n}": round(last["rss_mb"] - first["rss_mb"], 1),
            f"peak_growth_mb_trial_{warmup}_to_{n}": round(last["peak_mb"] - first["peak_mb"], 1),
            "peak_growth_fraction": round(peak_growth, 4),
            "thresholds": {"slope_mb_per_trial": SLOPE_LIMIT_MB, "peak_growth_fraction": PEAK_GROWTH_LIMIT},
            "verdict": "flat" if slope < SLOPE_LIMIT_MB and peak_growth < PEAK_GROWTH_LIMIT else "growing"})
    else:
        result["verdict"] = None  # fewer trials finished than the warm-up
    if len(snapshots) == 2:
        early, late = (snapshots[key] for key in sorted(snapshots))
        growth = collections.Counter({name: late[name] - early.get(name, 0) for name in late})
        result[f"object_types_growing_trial_{warmup}_to_{n}"] = dict(growth.most_common(15))
    result.update({"per_trial": readings,
                   "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                               "load_avg_end": [round(x, 2) for x in os.getloadavg()]}})
    os.chdir(REPO)
    if args.keep:
        result["store"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0 if n == args.trials and result["states"]["FAIL"] == 0 else 1


def object_types() -> collections.Counter:
    """How many objects of each type the garbage collector tracks (module.qualname)."""
    gc.collect()
    objects = gc.get_objects()
    counts = collections.Counter(map(type, objects))  # by type object: no string per object (keeps the peak)
    del objects
    return collections.Counter({f"{kind.__module__}.{kind.__qualname__}": count for kind, count in counts.items()})


def _input_of(params: dict, plan) -> str:
    """The trial's model input as `size x size x channels` (fixed knobs from the study file)."""
    fixed = {knob.name: knob.value for knob in plan.preprocess_knobs if knob.kind == "fixed"}
    size = params.get("preprocess.size", fixed.get("size", 32))
    mode = params.get("preprocess.mode", fixed.get("mode", "binary"))
    return f"{size}x{size}x{3 if mode == 'color' else 1}"


if __name__ == "__main__":
    sys.exit(main())
