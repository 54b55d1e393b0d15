"""Checks a sweep makes once, before its first trial: what every trial would otherwise fail on (data,
label map, exclusion list, cache folder), and that a resumed study is resumed on the data it began with."""

from __future__ import annotations

import os

import optuna


def preflight(plan) -> tuple[str, str]:
    """What every trial would fail on, found once before the first: the data (path, label map, exclusion
    list: `data.*` and the seed are the same for every trial) and a writable cache folder. Returns the
    data root and fingerprint."""
    from camp.images import cache_dir
    from camp.train import RunConfig, prepare_dataset

    config = RunConfig(data=plan.study_file.data, seed=plan.study_file.seed, data_path=plan.data_path)
    dataset, fingerprint = prepare_dataset(config)  # memoised: the first trial of this process reuses it
    if not dataset.split("train"):
        raise ValueError(f"{dataset.root}: no train images (after data.exclude and the label map)")
    folder = cache_dir()
    probe = folder / f".write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"cache folder {folder} is not a writable folder ({error.strerror or error}); "
                         "set $CAMP_CACHE to one") from None
    return str(dataset.root), fingerprint


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


def check_same_space(study: optuna.Study, plan, warn=None) -> list[str]:
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
        (warn or (lambda text: print(text, file=sys.stderr)))(
            f"camp: warning: study {study.study_name!r}: the study file changed since its earlier runs; these knobs "
            f"differ: {', '.join(changed)}. Earlier trials keep their values (registration uses each run's logged "
            "config); give the study another name to start afresh")
        study.set_user_attr("search_space", current)
    return changed
