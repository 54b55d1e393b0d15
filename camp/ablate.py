"""`camp ablate`: does a knob matter? Each knob named with `--vary` takes each of its values in turn while
every other knob stays at the base config (the champion's, a run's or a study file's), and every value
is trained `--seeds` times (`model.replica` 0..S-1). Each cell (value x seed) is a full training run.

The cells are an Optuna study of their own, written as a study file under mlruns/ablations/ (fixed knobs,
the varied ones as choices, `queued_only`), so they run on the sweep's machinery: parallel workers, the
journal or PostgreSQL storage, one `ablate-...` parent run with the cells nested under it, Ctrl-C and
resume (a rerun runs only the cells not yet complete). The same base, knobs and seeds give the same
study name. At the end each cell's model scores validation and test; `camp.ablate_stats` compares the
values and says in plain words which one wins, or that the data cannot tell.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import mlflow
import yaml

from camp import names, tracking
from camp.ablate_results import conclude, params_key, trial_key
from camp.config import load_study_file
from camp.interrupts import interrupts_raise_once
from camp.model import ModelConfig
from camp.preprocess import PreprocessConfig
from camp.registry import CHAMPION, MODEL_NAME, resolve_version
from camp.run_config import RunConfig, fixed_run_config, run_config_from_meta
from camp.sweep import run_study
from camp.sweep_summary import STATE

FOLDER = Path("mlruns") / "ablations"
SECTIONS = {"preprocess": PreprocessConfig, "model": ModelConfig}
# the camp's three questions (missions 2-1, 2-2, 3), sized to fit 30 minutes on 2 cores: a cheaper copy of
# the base (32 px, 10 epochs: ~1/8 of a 64 px, 20-epoch CNN's time) trained twice per value; 14 cells took
# 20 minutes on clothing-small (BENCHMARKS.md, "Controlled experiments")
MISSIONS = {"vary": ["preprocess.mode=gray,color,binary", "preprocess.crop_method=recipe,none,border",
                     "model.loss_weighting=none,balanced,focal"],
            "set": ["preprocess.size=32", "model.max_epochs=10"], "seeds": 2}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the ablation: its searched params, which value it tests, its replica."""

    params: dict
    label: str
    replica: int

    @property
    def key(self) -> str:
        return params_key(self.params)


def parse_assignment(text: str, flag: str) -> tuple[str, list]:
    """`preprocess.mode=gray,color` (or `mode=...` where one section has the knob) -> ("preprocess.mode",
    ["gray", "color"]), each value read as YAML (numbers, booleans)."""
    knob, separator, raw = text.partition("=")
    knob = knob.strip()
    if not separator or not knob or not raw.strip():
        raise ValueError(f"{flag} {text!r}: expected KNOB=VALUE[,VALUE...]")
    section, _, name = knob.rpartition(".")
    fields = {s: {f.name for f in dataclasses.fields(c)} for s, c in SECTIONS.items()}
    if not section:
        owners = [s for s in SECTIONS if name in fields[s]]
        section = owners[0] if len(owners) == 1 else ""
    if section not in SECTIONS or name not in fields[section]:
        raise ValueError(f"{flag} {text!r}: {knob!r} is not a knob (preprocess.<name> or model.<name>, e.g. "
                         "preprocess.mode, model.loss_weighting)")
    return f"{section}.{name}", [yaml.safe_load(value.strip()) for value in raw.split(",")]


def with_value(config: RunConfig, knob: str, value, where: str) -> RunConfig:
    section, name = knob.split(".", 1)
    try:
        return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **{name: value})})
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: {knob}={value!r}: {error}") from None


def plan_cells(base: RunConfig, varies: list[tuple[str, list]], seeds: int) -> list[Cell]:
    """Every (knob value, replica) cell, each checked by building its config; a cell shared by several
    knobs (the base values) is trained once."""
    if not varies:
        raise ValueError("camp ablate: name at least one --vary KNOB=V1,V2 (or --missions)")
    if not 1 <= seeds <= 20:
        raise ValueError(f"--seeds must be in [1, 20], got {seeds}")
    knobs = [knob for knob, _ in varies]
    duplicated = sorted({knob for knob in knobs if knobs.count(knob) > 1})
    if duplicated:
        raise ValueError(f"--vary names {', '.join(duplicated)} more than once")
    if "model.replica" in knobs:
        raise ValueError("--vary model.replica: the replica is the seed axis; use --seeds")
    base_values = {knob: getattr(getattr(base, knob.split(".")[0]), knob.split(".")[1]) for knob in knobs}
    cells, seen = [], set()
    for knob, values in varies:
        if len(set(map(json.dumps, values))) < 2:
            raise ValueError(f"--vary {knob}: give at least two different values, got {values}")
        for value in values:
            with_value(base, knob, value, f"--vary {knob}")
            label = "base" if value == base_values[knob] else f"{knob}={value}"
            for replica in range(seeds):
                params = {**base_values, knob: value}
                if seeds > 1:
                    params["model.replica"] = replica
                key = params_key(params)
                if key not in seen:
                    seen.add(key)
                    cells.append(Cell(params, label, replica))
    return cells


def base_config(base: str, data_path: str | None) -> tuple[RunConfig, dict]:
    """The config the ablation varies, and where it came from: {source, run_id (the run it reproduces),
    version_run_id (the registered version's run, which the report looks up), seconds}."""
    client = mlflow.MlflowClient()
    if base == "champion":
        base = f"models:/{MODEL_NAME}@{CHAMPION}"
    info = {"source": base, "run_id": None, "version_run_id": None, "seconds": None}
    if base.startswith(("models:/", "runs:/")):
        if base.startswith("models:/"):
            try:
                version = resolve_version(base)
            except ValueError as error:
                raise ValueError(f"--base {error} (or give a study file)") from None
            run_id = (version.tags or {}).get(names.RUN_ID) or version.run_id
            info["version_run_id"] = run_id
        else:
            run_id = base[len("runs:/"):].strip("/")
        meta = _bundle_meta(run_id, base)
        if "ensemble" in meta:
            # an ensemble: its heaviest CNN member stands for it (HOG reads colour images as gray, so the
            # colour question needs a CNN), else its heaviest member; ties: the first chosen
            spec = meta["ensemble"]
            members = [_bundle_meta(run, base) for run in spec["runs"]]
            cnn = [i for i, member in enumerate(members) if member["config"]["model"].get("family", "cnn") == "cnn"]
            heaviest = max(cnn or range(len(members)), key=lambda i: spec["weights"][i])
            run_id, meta = spec["runs"][heaviest], members[heaviest]
            info["member"] = f"trial {spec['trials'][heaviest]} (weight {spec['weights'][heaviest]:.3f})"
        run = client.get_run(run_id)
        info.update(run_id=run_id, seconds=round((run.info.end_time - run.info.start_time) / 1000, 1)
                    if run.info.end_time else None)
        config = run_config_from_meta(meta)
        if data_path:
            config = dataclasses.replace(config, data_path=data_path)
        return config, info
    if not Path(base).is_file():
        raise ValueError(f"--base {base!r}: expected champion, models:/NAME@ALIAS, models:/NAME/VERSION, "
                         "runs:/RUN_ID or a study file")
    return fixed_run_config(load_study_file(base), data_path), info


def _bundle_meta(run_id: str, where: str) -> dict:
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/bundle/camp.json")
    except (mlflow.exceptions.MlflowException, OSError):
        raise ValueError(f"--base {where}: run {run_id} has no bundle/camp.json (not a camp training run)") from None


def estimate_seconds(base: RunConfig, seconds: float | None, cells: list[Cell], sets: RunConfig,
                     workers: int) -> float | None:
    """Wall time of the cells from the base run's own time, scaled (CNN) by epochs and pixels; None when
    the base run's time is unknown."""
    if not seconds:
        return None
    scale = 1.0
    if sets.model.family == "cnn":
        scale = (sets.model.max_epochs / base.model.max_epochs) * (sets.preprocess.size / base.preprocess.size) ** 2
    return seconds * scale * len(cells) / max(1, workers)


def study_document(name: str, config: RunConfig, varies: list[tuple[str, list]], seeds: int, cells: int) -> dict:
    """The ablation as a study file: every knob fixed at the base, the varied ones as choices."""
    sections = {section: dataclasses.asdict(getattr(config, section)) for section in SECTIONS}
    for knob, values in varies:
        section, knob_name = knob.split(".", 1)
        base_value = sections[section][knob_name]
        choices = list(values) + ([] if base_value in values else [base_value])
        sections[section][knob_name] = {"choice": choices}
    sections["model"]["replica"] = {"choice": list(range(seeds))} if seeds > 1 else 0
    data = {key: value for key, value in dataclasses.asdict(config.data).items() if value is not None}
    study = {"name": name, "metric": config.metric, "direction": config.direction, "n_trials": cells,
             "max_failures": cells, "fit_in_timeout": False, "queued_only": True,
             "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"}}
    return {"study": study, "data": data, "seed": config.seed, **sections}


def run_ablate(args) -> int:
    """The `camp ablate` command."""
    with interrupts_raise_once():  # SIGTERM as Ctrl-C: the running cell is failed, a rerun resumes
        return _ablate(args)


def parse_flags(vary: list[str], set_: list[str]) -> tuple[list[tuple[str, list]], dict]:
    """`--vary` texts -> [(knob, values)], `--set` texts -> {knob: value}; bad ones are errors naming them."""
    sets = {}
    for knob, values in (parse_assignment(text, "--set") for text in set_):
        if len(values) != 1:
            raise ValueError(f"--set {knob}: one value, got {values}")
        sets[knob] = values[0]
    return [parse_assignment(text, "--vary") for text in vary], sets


def plan(base: RunConfig, varies: list[tuple[str, list]], sets: dict, seeds: int) -> tuple[RunConfig, list[Cell]]:
    """The base with the `sets` knobs held, and the cells around it."""
    held = base
    for knob, value in sets.items():
        held = with_value(held, knob, value, "--set")
    return held, plan_cells(held, varies, seeds)


def _ablate(args) -> int:
    tracking.setup()
    varies, sets = parse_flags((MISSIONS["vary"] if args.missions else []) + args.vary,
                               (MISSIONS["set"] if args.missions else []) + args.set)
    seeds = args.seeds if args.seeds is not None else (MISSIONS["seeds"] if args.missions else 2)
    base, info = base_config(args.base, args.data)
    held, cells = plan(base, varies, sets, seeds)
    identity = json.dumps({"base": dataclasses.asdict(dataclasses.replace(held, model=dataclasses.replace(
        held.model, replica=0))), "vary": varies, "seeds": seeds}, sort_keys=True, default=str)
    name = args.name or f"ablate-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"
    path = FOLDER / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(study_document(name, held, varies, seeds, len(cells)), sort_keys=False))
    estimate = estimate_seconds(base, info["seconds"], cells, held, args.workers)
    print(f"ablation {name}: {len(varies)} knob(s), {seeds} seed(s) each, {len(cells)} cells around "
          f"{info['source']}{' ' + info['member'] if info.get('member') else ''}"
          + (f"; about {estimate / 60:.0f} min with {args.workers} worker(s) (from the base run's "
             f"{info['seconds']:.0f} s)" if estimate else "") + f"; study file {path}", flush=True)
    study_args = argparse.Namespace(config=str(path), n_trials=len(cells), timeout=None, workers=args.workers,
                                    storage=args.storage, data=held.data_path, seed=None, no_register=True,
                                    worker_of=None)

    def queue(study, plan):
        def keys(*states):
            return {trial_key(t) for t in study.get_trials(deepcopy=False, states=states)}

        complete, queued = keys(STATE.COMPLETE), keys(STATE.COMPLETE, STATE.WAITING, STATE.RUNNING)
        for cell in cells:  # a failed or interrupted cell is queued again; a waiting or running one is not
            if cell.key not in queued:
                study.enqueue_trial(cell.params, user_attrs={"cell": cell.label, "replica": cell.replica})
        done = sum(cell.key in complete for cell in cells)
        print(f"ablation {name}: {done} of {len(cells)} cells done, {len(cells) - done} to run", flush=True)

    def after(study, summary, parent_run_id):
        return conclude(study, cells, varies, sets, held, info, name, args)

    return run_study(study_args, role="ablate", queue=queue, after=after)
