"""Time to target: wall time until a study's best `val/macro_f1` first reaches `--target`, for camp's sweep
(the study file as given: its seeded TPE sampler, its pruner, none in the default study, and its cost rule,
`study.dominated_time_share`, with the preprocessing caches on) against a baseline over the same search space
with Optuna's RandomSampler (same seed), no pruning (NopPruner), no cost rule (it starts every proposal) and
no preprocessing cache; same budget, seed, data and workers. Target of the
search issue: the median over seeds of baseline / camp time to target >= 2. Prints one JSON object.

    .venv/bin/python bench/sweep.py --max-per-class 10 --max-epochs 2 --budget 60 --target 0.2   # dev, ~3 min
    .venv/bin/python bench/sweep.py --max-per-class 60 --max-epochs 6 --budget 1200 --target 0.5 --out bench/results
    .venv/bin/python bench/sweep.py --seeds 42 43 44 --max-per-class 60 --max-epochs 6 --budget 1200 --target 0.5

How the arms run. Each arm gets a fresh temporary directory with its own Optuna journal, its own SQLite MLflow
store (`sqlite:///<dir>/mlflow.db`, artifacts beside it; nothing touches ./mlruns) and an empty $CAMP_CACHE, so
camp starts cold too. The study file is loaded with camp's own `load_study_file`; the arm's differences are
`dataclasses.replace` on it (name, sampler, pruner, budget, data.max_per_class, model.max_epochs), then the
knobs are parsed by `camp.space.parse_space` as `camp sweep` does. The trials run through camp's real code
path, `camp.sweep.run_worker` (sampler and pruner from `make_sampler`/`make_pruner`, objective from
`make_objective`, `train(config)` per trial), in `--workers` fresh worker processes per arm, like
`camp sweep --workers N`. The arms run one after the other, never at once; with several `--seeds` the order
alternates (camp first for the 1st seed, baseline first for the 2nd, ...) against load drift.

No preprocessing cache (baseline): in the baseline's worker processes `camp.train.load_arrays` is replaced by
the cache-miss branch of `camp.caches.load_arrays` without the writes (decode every image with
`camp.images.decode_items`, run `preprocess_batch`), and `camp.caches._MEMORY` (the in-process decoded cache) is
cleared before each trial. So neither the config-keyed array cache nor the decoded cache (disk or memory) is
read or written, nor the picture cache (`camp.plots.cached_picture`: each trial draws its own preprocessing
grid): what a harness with no cache pays. After the arm, its $CAMP_CACHE must still be empty and
every trial's MLflow tag `camp.cache` must be `miss`; `baseline.cache_isolated` says whether that held (if camp
changes how train loads arrays and the replacement stops applying, this turns false).

Budget: `--budget` seconds of wall time per arm, counted from the arm's start (worker processes starting and
importing TensorFlow included, the same for both arms); as in `camp sweep --timeout`, no trial starts after
it, and one running then finishes. A target reached by a trial that finished after the budget does not count
(`reached_after_budget_s` shows it). `--trials` caps finished trials instead of, or as well as, the budget.

Time to target: from each arm's complete trials in order of completion, the elapsed time at which the running
best first reaches `--target`. Pruned trials never count towards the best (as in Optuna). Not reached: null,
and the arm's budget (or its wall time) is a lower bound on it, so `speedup = baseline / camp` is then a
`lower_bound` (baseline not reached) or an `upper_bound` (camp not reached); `target_met` is null when a
bound cannot decide (speedup >= 2 required). With several seeds the per-arm median is used (not reached
counts as infinite); `per_seed` also pairs the arms seed by seed, and `median_ratio` is the median of those
ratios (the issue's measure). A seed where neither arm reached the target counts as no speed-up there (ratio
0, shown as null), so `median_ratio_met` is a verdict that bounds cannot make look better than it is.

Choosing `--target`: a value the camp arm reaches in roughly the first third to half of its budget in a pilot
run at the same shrunk size, and below what random search typically ends with, so both arms can reach it and
the ratio is not a bound. Shrinking the data lowers every value (not measured at the recommended size): the
full default sweep's best so far was 0.74 (15 epochs, all images), and a model that predicts one label scores
~0.14 there, ~0.07 when `--max-per-class` makes the validation labels balanced. The default 0.55 suits the
full size; pass the pilot's value, and report the command.

Shrinking (applied to both arms identically): `--max-per-class N` sets `data.max_per_class` (N images per split
and label); `--max-epochs E` caps `model.max_epochs` (a fixed value or a range). A pruner's warm-up
(`n_warmup_steps`) is left as the study file says, so with a median pruner few epochs understate it (use
>= 6); the default study prunes nothing, so there the arms differ by the sampler and the caches only.
Warm-start trials (`study.warm_start`) are not queued in either arm: this compares search, not a head start.

Same seed, same first trials: a seeded TPESampler draws its first `n_startup_trials` (4 in the default study)
from a RandomSampler with the same seed, so both arms train the same configurations, with the same results
(training is seeded and deterministic), until then; there the arms differ only by the caches (and the
pruner, if any), and TPE's own proposals start after them. Both arms keep camp's in-process memo of the dataset's file
list and fingerprint (`camp.train.prepare_dataset`: every file hashed once per worker process), which is not a
preprocessing cache.

`--out DIR` writes `sweep_time_to_target.png` (best so far vs wall time, both arms, every seed). `levels`
reads the same curves at several targets (`--levels`), so one run shows where the speed-up holds and where
it does not; `--rescore OUT.json` recomputes it from a saved output without running anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from camp import names  # noqa: E402 - after the path: the bench runs from a checkout
from camp.sweep_summary import trial_counts  # noqa: E402 - after the path, as above

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ARMS = ("camp", "baseline")
SPEEDUP_TARGET = 2.0
NO_TRIAL_CAP = 100_000  # --budget only: finished trials are not what stops the arm


def log(message: str) -> None:
    print(f"[bench/sweep {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- plans (shared with bench/memory.py)

def _cap_epochs(spec, cap: int):
    """A `model.max_epochs` knob (fixed value or range) with every value it can take capped at `cap`."""
    if not isinstance(spec, dict):
        return min(int(spec), cap)
    spec = dict(spec)
    if "int" in spec:
        low, high = spec["int"]
        spec["int"] = [min(low, cap), min(high, cap)]
        step = spec.get("step")
        if step and (spec["int"][1] - spec["int"][0]) % step:
            spec["int"][1] = spec["int"][0] + (spec["int"][1] - spec["int"][0]) // step * step
    elif "choice" in spec:
        spec["choice"] = sorted({min(int(value), cap) for value in spec["choice"]})
    else:
        raise ValueError(f"model.max_epochs: cannot cap {spec!r}")
    return spec


def build_plan(config: str, *, name: str, n_trials: int, timeout: float | None = None, storage_url: str,
               data_path: str | None = None, sampler: str | None = None, pruner: str | None = None,
               seed: int | None = None, max_per_class: int | None = None, max_epochs: int | None = None,
               exclude: str | None = None, set_aside_dominated: bool = True):
    """camp's `Plan` for study file `config` with the benchmark's overrides, built as `make_plan` builds it:
    `load_study_file`, then `dataclasses.replace` (each replace re-runs the config checks), then
    `camp.objective.plan_for` (both knob sections parsed)."""
    from camp.config import load_study_file
    from camp.model import ModelConfig
    from camp.objective import plan_for

    study_file = load_study_file(config)
    study = study_file.study
    sampler_config = study.sampler
    if seed is not None:
        sampler_config = dataclasses.replace(sampler_config, seed=seed)
    if sampler is not None:
        sampler_config = dataclasses.replace(sampler_config, name=sampler)
    pruner_config = dataclasses.replace(study.pruner, name=pruner) if pruner is not None else study.pruner
    study = dataclasses.replace(study, name=name, n_trials=n_trials, timeout=timeout, sampler=sampler_config,
                                pruner=pruner_config)
    if not set_aside_dominated:  # the baseline starts whatever its sampler proposes
        study = dataclasses.replace(study, dominated_time_share=None)
    data = study_file.data
    if max_per_class is not None:
        data = dataclasses.replace(data, max_per_class=max_per_class)
    if exclude is not None:  # data.exclude made absolute by the caller (workers run from the arm's directory)
        data = dataclasses.replace(data, exclude=exclude)
    model = dict(study_file.model)
    if max_epochs is not None:
        model["max_epochs"] = _cap_epochs(model.get("max_epochs", ModelConfig().max_epochs), max_epochs)
        # no early stop before min_epochs: capped with max_epochs, which it may not exceed
        model["min_epochs"] = _cap_epochs(model.get("min_epochs", ModelConfig().min_epochs), max_epochs)
    study_file = dataclasses.replace(study_file, study=study, data=data, model=model)
    return plan_for(study_file, n_trials, timeout, storage_url, data_path)


def absolute_exclude(config: str) -> str | None:
    """The study's data.exclude as an absolute path (camp reads it relative to the working directory)."""
    from camp.config import load_study_file

    exclude = load_study_file(config).data.exclude
    return os.path.abspath(exclude) if exclude else None


def data_root(data: str | None, config: str) -> str:
    """The dataset folder as an absolute path (worker processes run from a temporary directory)."""
    from camp.config import load_study_file
    from camp.data import resolve_data_path

    return str(resolve_data_path(data, load_study_file(config).data.path).resolve())


def make_store(directory: Path) -> dict:
    """A fresh MLflow store (SQLite, artifacts beside it), Optuna journal and empty cache under `directory`;
    the environment that points camp at them."""
    directory.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{directory / 'mlflow.db'}"  # camp.tracking keeps its artifacts beside it
    (directory / "cache").mkdir()
    return {"MLFLOW_TRACKING_URI": uri, "CAMP_CACHE": str(directory / "cache"),
            "storage": f"journal:{directory / 'optuna.journal'}"}


def cache_files(directory: Path) -> int:
    return sum(1 for path in Path(directory).rglob("*") if path.is_file())


# ---------------------------------------------------------------- worker process (one per --workers, per arm)

def install_no_cache() -> None:
    """This process's trials neither read nor write a preprocessing cache (see the module docstring)."""
    import camp.caches as caches
    import camp.images as image_io
    import camp.plots as plots
    import camp.sweep as sweep
    import camp.train as train

    def load_arrays(items, data_fingerprint, config, progress=True):
        caches._MEMORY.clear()
        decoded, skipped = image_io.decode_items(items, config.decode_reduction, progress)
        return caches.arrays_from(items, decoded, skipped, config, config.cache_key(data_fingerprint), progress)

    if not hasattr(train, "load_arrays"):
        raise RuntimeError("camp.train no longer imports load_arrays: update bench/sweep.py's no-cache baseline")
    train.load_arrays = load_arrays
    if not hasattr(plots, "cached_picture"):
        raise RuntimeError("camp.plots has no cached_picture: update bench/sweep.py's no-cache baseline")
    plots.cached_picture = lambda path, key, draw: draw(path)  # every trial draws its preprocessing grid
    make_objective = sweep.make_objective

    def make_uncached_objective(plan, parent_run_id, *args, **kwargs):
        objective = make_objective(plan, parent_run_id, *args, **kwargs)

        def uncached(trial):
            caches._MEMORY.clear()
            return objective(trial)

        return uncached

    sweep.make_objective = make_uncached_objective  # run_worker looks it up in camp.sweep at call time


def worker_main(spec: dict) -> int:
    """`--worker SPEC`: one worker of one arm; camp.sweep.run_worker until the budget or trial cap."""
    from camp.sweep import run_worker

    if spec["arm"] == "baseline":
        install_no_cache()
    left = spec["budget"] - (time.time() - spec["arm_started"]) if spec["budget"] else None
    if left is not None and left <= 0:
        return 0
    plan = build_plan(spec["config"], name=spec["study"], n_trials=spec["n_trials"], timeout=left,
                      storage_url=spec["storage"], data_path=spec["data"], sampler=spec["sampler"],
                      pruner=spec["pruner"], seed=spec["seed"], max_per_class=spec["max_per_class"],
                      max_epochs=spec["max_epochs"], exclude=spec["exclude"],
                      set_aside_dominated=spec["set_aside_dominated"])
    run_worker(plan, spec["parent_run_id"], spec["index"], spec["workers"])
    return 0


# ---------------------------------------------------------------- one arm

def run_arm(arm: str, seed: int, args, data: str, work: Path) -> dict:
    import mlflow
    import optuna

    from camp import tracking
    from camp.storage import make_storage

    directory = work / f"{arm}-s{seed}"
    store = make_store(directory)
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "CAMP_CACHE", "CAMP_THREADS")}
    os.environ.update({"MLFLOW_TRACKING_URI": store["MLFLOW_TRACKING_URI"], "CAMP_CACHE": store["CAMP_CACHE"]})
    if args.workers > 1:  # as `camp sweep --workers N` does
        os.environ.setdefault("CAMP_THREADS", str(max(1, (os.cpu_count() or 1) // args.workers)))
    name = f"bench-{arm}-s{seed}"
    overrides = ({"sampler": "random", "pruner": "none", "set_aside_dominated": False} if arm == "baseline"
                 else {"sampler": None, "pruner": None, "set_aside_dominated": True})
    n_trials = args.trials or NO_TRIAL_CAP
    exclude = absolute_exclude(args.config)
    plan = build_plan(args.config, name=name, n_trials=n_trials, storage_url=store["storage"], data_path=data,
                      seed=seed, max_per_class=args.max_per_class, max_epochs=args.max_epochs, exclude=exclude,
                      **overrides)
    study_config = plan.study_file.study
    try:
        tracking.setup()
        storage = make_storage(store["storage"])
        optuna.create_study(study_name=name, storage=storage, direction=study_config.direction)
        log(f"arm {arm} (seed {seed}): sampler {study_config.sampler.name}, pruner {study_config.pruner.name}, "
            f"budget {args.budget or '-'} s, trials {args.trials or '-'}, {args.workers} worker(s); store {directory}")
        with mlflow.start_run(run_name=f"sweep-{name}", tags={names.STUDY: name, names.ROLE: "sweep",
                                                              "camp.bench": "bench/sweep.py"}) as parent:
            started = time.time()
            spec = {"arm": arm, "config": str(Path(args.config).resolve()), "study": name, "n_trials": n_trials,
                    "budget": args.budget, "arm_started": started, "storage": store["storage"], "data": data,
                    "sampler": overrides["sampler"], "pruner": overrides["pruner"],
                    "set_aside_dominated": overrides["set_aside_dominated"], "seed": seed,
                    "max_per_class": args.max_per_class, "max_epochs": args.max_epochs, "exclude": exclude,
                    "parent_run_id": parent.info.run_id, "workers": args.workers}
            children = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                          json.dumps({**spec, "index": index})],
                                         cwd=directory, stdout=sys.stderr, env=os.environ.copy())
                        for index in range(args.workers)]
            codes = [child.wait() for child in children]
            wall = time.time() - started
        study = optuna.load_study(study_name=name, storage=storage)
        cache_tags = [run.data.tags.get(names.CACHE) for run in mlflow.search_runs(
            experiment_names=["camp"], filter_string=f"tags.`optuna.study` = '{name}'", output_format="list",
            max_results=10_000) if run.data.tags.get(names.ROLE) != "sweep"]
        written = cache_files(Path(store["CAMP_CACHE"]))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    result = summarise_arm(study, started, args.budget, args.target, study_config.direction)
    result.update({"seed": seed, "sampler": study_config.sampler.name, "pruner": study_config.pruner.name,
                   "wall_s": round(wall, 1), "worker_exit_codes": codes,
                   "array_cache": {"hit": cache_tags.count("hit"), "miss": cache_tags.count("miss"),
                                   "untagged": sum(tag is None for tag in cache_tags)},
                   "cache_files_written": written})
    if arm == "baseline":
        result["cache_isolated"] = written == 0 and cache_tags.count("hit") == 0
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        result["store"] = str(directory)
    log(f"arm {arm} (seed {seed}): {result['complete']} complete, {result['pruned']} pruned, {result['failed']} "
        f"failed, best {result['best_value']}, time to target {result['time_to_target_s']} s, wall {wall:.0f} s")
    return result


def summarise_arm(study, started: float, budget: float | None, target: float, direction: str) -> dict:
    from optuna.trial import TrialState

    finished = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    finished.sort(key=lambda t: t.datetime_complete)
    timeline, best, reached_at, best_curve = [], None, None, []
    for trial in finished:
        elapsed = round(_epoch(trial.datetime_complete) - started, 1)
        value = trial.value
        if trial.state == TrialState.PRUNED and value is None and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]  # its last reported value
        timeline.append([elapsed, None if value is None else round(value, 4), trial.state.name])
        if trial.state == TrialState.COMPLETE and value is not None and math.isfinite(value):
            if names.better(value, best, direction):
                best = value
                best_curve.append([elapsed, round(best, 4)])
            if reached_at is None and not names.better(target, best, direction):
                reached_at = elapsed
    within = reached_at is not None and (budget is None or reached_at <= budget)
    return {**trial_counts(study.get_trials(deepcopy=False)), "best_value": None if best is None else round(best, 4),
            "time_to_target_s": reached_at if within else None,
            "reached_after_budget_s": reached_at if reached_at is not None and not within else None,
            "trial_seconds_median": _median_seconds(finished), "best_so_far": best_curve, "timeline": timeline}


def _epoch(moment: datetime) -> float:
    return moment.timestamp()  # Optuna stores naive local times; .timestamp() reads them as local


def _median_seconds(trials) -> float | None:
    seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_start]
    return round(statistics.median(seconds), 1) if seconds else None


# ---------------------------------------------------------------- comparison

def arm_time(results: list[dict], args) -> tuple[float, bool]:
    """(median time to target over seeds, whether it is exact); not reached counts as infinite, and an
    infinite median is reported as its lower bound (the budget, else the longest wall time)."""
    times = sorted(r["time_to_target_s"] if r["time_to_target_s"] is not None else math.inf for r in results)
    middle = statistics.median(times)
    if math.isfinite(middle):
        return middle, True
    bound = args.budget or max(r["wall_s"] for r in results)
    return float(bound), False


def compare(by_arm: dict, args) -> dict:
    camp_time, camp_exact = arm_time(by_arm["camp"], args)
    base_time, base_exact = arm_time(by_arm["baseline"], args)
    out = {"camp_time_to_target_s": camp_time if camp_exact else None,
           "baseline_time_to_target_s": base_time if base_exact else None}
    if camp_exact and base_exact:
        speedup, bound = base_time / max(camp_time, 1e-9), "exact"
        met = speedup >= SPEEDUP_TARGET
    elif camp_exact:  # baseline not reached: it needs more than the budget
        speedup, bound = base_time / max(camp_time, 1e-9), "lower_bound"
        met = True if speedup >= SPEEDUP_TARGET else None
    elif base_exact:  # camp not reached: it needs more than the budget
        speedup, bound = base_time / camp_time, "upper_bound"
        met = False if speedup < SPEEDUP_TARGET else None
    else:
        speedup, bound, met = None, "neither_reached", None
    out.update({"speedup": None if speedup is None else round(speedup, 2), "speedup_bound": bound,
                "speedup_target": SPEEDUP_TARGET, "target_met": met})
    out.update(per_seed_ratios(by_arm, args))
    return out


def per_seed_ratios(by_arm: dict, args) -> dict:
    """baseline / camp time to target for each seed that both arms ran, and the median of those ratios.
    An arm that did not reach the target within the budget is given the budget (its wall time without
    one): that understates the ratio where only the baseline missed (a lower bound) and overstates it where
    only camp missed (an upper bound, but then the baseline reached it within the budget, so the ratio is
    <= 1 anyway). Neither reached: no evidence of a speed-up, counted as 0."""
    camp = {r["seed"]: r for r in by_arm["camp"]}
    rows, values = [], []
    for baseline in by_arm["baseline"]:
        mine = camp.get(baseline["seed"])
        if mine is None:
            continue
        camp_s, base_s = mine["time_to_target_s"], baseline["time_to_target_s"]
        if camp_s is None and base_s is None:
            rows.append({"seed": baseline["seed"], "camp_s": None, "baseline_s": None, "ratio": None,
                         "bound": "neither_reached"})
            values.append(0.0)
            continue
        ceiling = lambda run: args.budget or run["wall_s"]  # noqa: E731 - the not-reached stand-in, per arm
        ratio = (base_s if base_s is not None else ceiling(baseline)) / max(camp_s if camp_s is not None
                                                                            else ceiling(mine), 1e-9)
        bound = "exact" if camp_s is not None and base_s is not None else (
            "lower_bound" if camp_s is not None else "upper_bound")
        rows.append({"seed": baseline["seed"], "camp_s": camp_s, "baseline_s": base_s,
                     "ratio": round(ratio, 2), "bound": bound})
        values.append(ratio)
    middle = statistics.median(values) if values else None
    return {"per_seed": rows, "median_ratio": None if middle is None else round(middle, 2),
            "median_ratio_met": None if middle is None else middle >= SPEEDUP_TARGET}


def first_reached(best_so_far: list, level: float, budget: float | None) -> float | None:
    """When a best-so-far curve ([elapsed_s, best], maximising) first reaches `level` within the budget."""
    for elapsed, best in best_so_far:
        if best >= level:
            return elapsed if budget is None or elapsed <= budget else None
    return None


def levels_table(runs: list[dict], levels: list[float], budget: float | None) -> list[dict]:
    """Time to each of several targets from the same runs (the median over seeds; not reached = null), and
    baseline / camp where both reached it: the speed-up read off the whole best-so-far curve, not one target."""
    rows = []
    for level in levels:
        row = {"target": level}
        for arm in ARMS:
            times = [first_reached(run["best_so_far"], level, budget) for run in runs if run["arm"] == arm]
            finite = sorted(t if t is not None else math.inf for t in times)
            middle = statistics.median(finite) if finite else math.inf
            row[f"{arm}_s"] = middle if math.isfinite(middle) else None
        both = row["camp_s"] is not None and row["baseline_s"] is not None
        row["speedup"] = round(row["baseline_s"] / max(row["camp_s"], 1e-9), 2) if both else None
        rows.append(row)
    return rows


def plot(runs: list[dict], args, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"camp": "tab:blue", "baseline": "tab:orange"}
    figure, axes = plt.subplots(figsize=(9, 5))
    for run in runs:
        end = args.budget or run["wall_s"]
        curve = run["best_so_far"]
        xs = [0.0] + [point[0] for point in curve] + [max(end, curve[-1][0] if curve else 0.0)]
        ys = [math.nan] + [point[1] for point in curve] + [curve[-1][1] if curve else math.nan]
        label = f"{run['arm']} seed {run['seed']} ({run['sampler']}, pruner {run['pruner']})"
        axes.step(xs, ys, where="post", color=colours[run["arm"]], alpha=0.9 if len(runs) <= 2 else 0.6, label=label)
        done = [point for point in run["timeline"] if point[1] is not None]
        axes.scatter([p[0] for p in done], [p[1] for p in done], s=10, color=colours[run["arm"]], alpha=0.35,
                     marker="x" if run["arm"] == "baseline" else "o")
    axes.axhline(args.target, color="gray", linestyle="--", linewidth=1, label=f"target {args.target}")
    if args.budget:
        axes.axvline(args.budget, color="gray", linestyle=":", linewidth=1, label=f"budget {args.budget:.0f} s")
    axes.set_xlabel("wall time since the arm started (s)")
    axes.set_ylabel("best val/macro_f1 so far (dots: each trial; pruned at its last report)")
    axes.set_title("Time to target: camp sweep vs random search, no pruning, no cache")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return worker_main(json.loads(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sweeps/default.yaml", help="study file (camp's arm uses it as given)")
    parser.add_argument("--data", help="dataset folder (default: data.path, $CAMP_DATA, data/clothing-small)")
    parser.add_argument("--target", type=float, default=0.55, help="val/macro_f1 to reach (see 'Choosing --target')")
    parser.add_argument("--budget", type=float, default=1200, help="wall seconds per arm (0: none; then give --trials)")
    parser.add_argument("--trials", type=int, help="finished trials per arm (default: until the budget)")
    parser.add_argument("--seeds", type=int, nargs="+", help="sampler seeds, one camp+baseline pair each "
                        "(default: the study file's sampler seed)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per arm (same for both)")
    parser.add_argument("--max-per-class", type=int, help="data.max_per_class for both arms (shrinks every trial)")
    parser.add_argument("--max-epochs", type=int, help="cap model.max_epochs for both arms")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--out", help="folder for sweep_time_to_target.png")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6],
                        help="also report the time to each of these targets (table `levels`)")
    parser.add_argument("--rescore", metavar="JSON", help="recompute `levels` from this script's saved output, run nothing")
    parser.add_argument("--keep", action="store_true", help="keep each arm's store (MLflow, journal, cache)")
    args = parser.parse_args()
    if args.rescore:
        saved = json.loads(Path(args.rescore).read_text())
        budget = saved["args"].get("budget")
        saved["levels"] = levels_table(saved["runs"], args.levels, budget)
        print(json.dumps(saved, indent=2))
        return 0
    if not args.budget and not args.trials:
        parser.error("give --budget or --trials")
    if args.workers < 1 or (args.trials is not None and args.trials < 1):
        parser.error("--workers and --trials must be >= 1")
    args.budget = args.budget or None

    from camp.config import load_study_file

    study_file = load_study_file(args.config)
    seeds = args.seeds or [study_file.study.sampler.seed]
    data = data_root(args.data, args.config)
    build_plan(args.config, name="check", n_trials=1, storage_url="", data_path=data,  # bad overrides fail here
               max_per_class=args.max_per_class, max_epochs=args.max_epochs)
    started = time.time()
    results: dict = {
        "bench": "sweep", "command": " ".join([".venv/bin/python", "bench/sweep.py", *sys.argv[1:]]),
        "args": {k: v for k, v in vars(args).items() if k not in ("keep",)}, "data": data, "seeds": seeds,
        "metric": study_file.study.metric, "camp_arm": {"sampler": study_file.study.sampler.name,
                                                        "pruner": study_file.study.pruner.name,
                                                        "preprocessing_cache": True,
                                                        "dominated_time_share": study_file.study.dominated_time_share},
        "baseline_arm": {"sampler": "random", "pruner": "none", "preprocessing_cache": False,
                         "dominated_time_share": None},
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_start": [round(x, 2) for x in os.getloadavg()]},
        "runs": []}
    work = Path(tempfile.mkdtemp(prefix="camp-bench-sweep-"))
    try:
        for position, seed in enumerate(seeds):
            order = list(args.arms) if position % 2 == 0 else list(reversed(args.arms))
            for arm in order:
                results["runs"].append({"arm": arm, **run_arm(arm, seed, args, data, work)})
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    by_arm = {arm: [run for run in results["runs"] if run["arm"] == arm] for arm in args.arms}
    results["arms"] = {arm: {"time_to_target_s": [r["time_to_target_s"] for r in runs],
                             "best_value": [r["best_value"] for r in runs],
                             "complete": sum(r["complete"] for r in runs), "pruned": sum(r["pruned"] for r in runs),
                             "skipped": sum(r["skipped"] for r in runs), "failed": sum(r["failed"] for r in runs),
                             "array_cache_hits": sum(r["array_cache"]["hit"] for r in runs)}
                       for arm, runs in by_arm.items()}
    if set(by_arm) == set(ARMS):
        results.update(compare(by_arm, args))
        results["levels"] = levels_table(results["runs"], args.levels, args.budget)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        results["plot"] = str(plot(results["runs"], args, out / "sweep_time_to_target.png"))
    results["wall_s"] = round(time.time() - started, 1)
    results["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))
    return 0 if all(code == 0 for run in results["runs"] for code in run["worker_exit_codes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
