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
