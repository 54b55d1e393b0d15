"""Checks a sweep makes once, before its first trial: what every trial would otherwise fail on (data,
label map, exclusion list, cache folder), and that a resumed study is resumed on the data it began with."""

from __future__ import annotations

import os

import optuna

from camp.caches import cache_dir, load_decoded
from camp.run_config import RunConfig, prepare_dataset


def preflight(plan) -> tuple:
    """What every trial would fail on, found once before the first: the data (path, label map, exclusion
    list: `data.*` and the seed are the same for every trial) and a writable cache folder. Returns the
    dataset and its fingerprint."""

    config = RunConfig(data=plan.study_file.data, seed=plan.study_file.seed, data_path=plan.data_path)
    dataset, fingerprint = prepare_dataset(config)  # memoised: the first trial of this process reuses it
    if not dataset.split("train"):
        raise ValueError(f"{dataset.root}: no train images (after data.exclude and the label map)")
    folder = cache_dir()
    _check_writable(folder)
    _check_readable_train(plan, dataset, fingerprint)
    return dataset, fingerprint


def _check_readable_train(plan, dataset, fingerprint: str) -> None:
    """Decode train + validation once, as the trials will (the decoded cache they then reuse), and refuse a
    dataset with no readable train image, naming why the first one was skipped."""

    knob = next((k for k in plan.preprocess_knobs if k.name == "decode_reduction"), None)
    reduction = knob.value if knob is not None and knob.kind == "fixed" else 2
    used = [item for item in dataset.items if item.split in ("train", "validation")]
    _, skipped = load_decoded(used, f"{fingerprint}-train+validation", reduction, progress=False)
    train = [item for item in used if item.split == "train"]
    if all(item.relpath in skipped for item in train):
        raise ValueError(f"{dataset.root}: none of its {len(train)} train images can be read, e.g. "
                         f"{skipped[train[0].relpath]}")


def _check_writable(folder) -> None:
    probe = folder / f".write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"cache folder {folder} is not a writable folder ({error.strerror or error}); "
                         "set $CAMP_CACHE to one") from None


def check_same_data(study: optuna.Study, root: str, fingerprint: str) -> None:
    """A study keeps the data it started on: a resume on other data would mix trials (and champions) of
    two datasets under one name. The first run records the data; a later one on other data is refused."""
    recorded = study.user_attrs.get("data_fingerprint")
    if recorded is None:
        study.set_user_attr("data_fingerprint", fingerprint)
        study.set_user_attr("data_root", root)
    elif recorded != fingerprint:
        raise ValueError(f"study {study.study_name!r} was run on {study.user_attrs.get('data_root')} (data fingerprint "
                         f"{recorded[:12]}), but this run's data {root} has fingerprint {fingerprint[:12]}: resume it on "
                         "the same data, or give this run another study.name")


def space_of(plan) -> dict:
    """The study file's knobs as plain values (fixed value or range), for comparing across resumes."""
    import dataclasses

    return {knob.param_name: {key: (list(value) if isinstance(value, tuple) else value)
                              for key, value in dataclasses.asdict(knob).items() if key not in ("section", "name")}
            for knob in plan.preprocess_knobs + plan.model_knobs}


def check_same_space(study: optuna.Study, plan) -> list[str]:
    """Record the search space on the first run; on a resume, warn naming the knobs whose fixed value or
    range changed since (the trials so far were sampled from the old space). Returns those knobs."""
    import json
    import sys

    current = json.loads(json.dumps(space_of(plan), default=str))
    recorded = study.user_attrs.get("search_space")
    if recorded is None:
        study.set_user_attr("search_space", current)
        return []
    changed = sorted(name for name in set(current) | set(recorded) if current.get(name) != recorded.get(name))
    if changed:
        print(
            f"camp: warning: study {study.study_name!r}: the study file changed since its earlier runs; these knobs "
            f"differ: {', '.join(changed)}. Earlier trials keep their values (registration uses each run's logged "
            "config); give the study another name to start afresh", file=sys.stderr)
        study.set_user_attr("search_space", current)
    return changed
