"""Study files (`sweeps/*.yaml`) and the frozen dataclasses they resolve to.

A study file has five sections: `study` (name, metric, direction, sampler, pruner, budget),
`data` (where and how to read the dataset), `seed`, and the `preprocess` / `model` knobs, each
either a fixed value or a search range (see `camp.space`). Unknown or mistyped keys are a
`ValueError` naming the file and the key, before anything runs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

from camp import names
from camp.typed_yaml import build_dataclass, load_yaml

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Optuna sampler: TPE (multivariate, seeded) or random, for comparisons."""

    name: str = "tpe"
    seed: int = 42
    n_startup_trials: int = 8
    multivariate: bool = True

    def __post_init__(self):
        if self.name not in SAMPLERS:
            raise ValueError(f"sampler.name must be one of {SAMPLERS}, got {self.name!r}")
        if self.n_startup_trials < 0:
            raise ValueError("sampler.n_startup_trials must be >= 0")
        if not 0 <= self.seed < 2 ** 32:  # numpy's seed range, which Optuna's samplers use
            raise ValueError(f"sampler.seed must be in [0, 2**32), got {self.seed}")


@dataclasses.dataclass(frozen=True)
class PrunerConfig:
    """Optuna pruner over the per-epoch objective metric."""

    name: str = "median"
    n_startup_trials: int = 3
    n_warmup_steps: int = 3  # median: epochs before pruning; hyperband: its min_resource
    signal: Optional[str] = None  # the per-epoch value the pruner ranks (default: the study's metric)

    def __post_init__(self):
        if self.name not in PRUNERS:
            raise ValueError(f"pruner.name must be one of {PRUNERS}, got {self.name!r}")
        if self.signal is not None and self.signal not in names.OBJECTIVES:
            raise ValueError(f"pruner.signal must be one of {sorted(names.OBJECTIVES)}, got {self.signal!r}")
        if self.n_startup_trials < 0:
            raise ValueError(f"pruner.n_startup_trials must be >= 0, got {self.n_startup_trials}")
        if self.n_warmup_steps < 0 or (self.name == "hyperband" and self.n_warmup_steps < 1):
            raise ValueError(f"pruner.n_warmup_steps must be >= 0 (hyperband: >= 1, its minimum resource), "
                             f"got {self.n_warmup_steps}")


ENSEMBLES = ("none", "caruana", "top_k")
TTA_CHOICES = ("none", "flip", "auto")


@dataclasses.dataclass(frozen=True)
class FinalizeConfig:
    """What a sweep does after its trials: combine the best ones into one registered model.

    `caruana`: greedy forward selection with replacement on the trials' validation probabilities
    (Caruana et al. 2004), at most `max_members` distinct trials; `top_k`: the `max_members` best,
    equally weighted; `none`: register the best single trial. The ensemble is registered only when it
    beats the best single trial on validation by more than `min_gain`.
    """

    ensemble: str = "none"  # sweeps/default.yaml asks for caruana
    max_members: int = 3
    rounds: int = 10  # selection steps (members may repeat: that is their weight)
    min_gain: float = 0.0
    # test-time augmentation of the registered model: flip averages each image with its mirror; auto
    # keeps it only where it scores better on validation
    tta: str = "none"
    # refit: after the search, the `refit` best distinct configs train again as finalists, their schedule
    # `epochs_factor` times as long (and at input `refit_size`, 0: unchanged), in the last `share` of
    # study.timeout; finalists join the ensemble's candidates (camp.refit)
    refit: int = 0
    epochs_factor: float = 2.0
    refit_size: int = 0
    share: float = 0.0
    # train_on_validation: the registered model's members, chosen on validation as above, train once more on
    # train + validation for the epochs their runs selected (camp.refit_full), and those are registered:
    # test is then their only held-out score, and promotion compares on test
    train_on_validation: bool = False
    # heldout_splits: the whole choice above is repeated on random halves of the validation images and scored
    # on the other halves, this many times: a validation figure for the registered model that did not choose
    # it (the version's camp.heldout_value); 0 skips it
    heldout_splits: int = 50
    # min_images_per_second: a serving floor (0: none; camp.serving_cost): with a cascade, the ensemble chosen
    # without the floor is kept where a cascade can meet it; otherwise the members and augmentation are chosen
    # only among those whose estimated batch throughput on this machine meets it
    min_images_per_second: float = 0.0
    # distill: epochs of one CNN trained on the chosen ensemble's probabilities, registered instead of it (camp.distill)
    distill: int = 0
    # cascade: a registered ensemble lets one member alone answer where it is sure, at the lowest threshold that
    # keeps the ensemble's validation labels on at least this share (camp.cascade; 0: off; not with distill);
    # with a serving floor, only where the whole ensemble misses it, answering just the share the floor needs
    cascade: float = 0.0

    def __post_init__(self):
        if self.cascade and not (0.9 <= self.cascade <= 1.0 and not self.distill and not self.train_on_validation):
            raise ValueError(f"finalize.cascade must be 0 (off) or a label agreement in [0.9, 1] with distill and "
                             f"train_on_validation off, got {self.cascade}" + (f" with distill {self.distill}"
                             if self.distill else " with train_on_validation" if self.train_on_validation else ""))
        if not 0 <= self.distill <= 100 or (self.distill and self.train_on_validation):
            raise ValueError(f"finalize.distill must be in [0, 100] epochs (0: off) and needs train_on_validation off, "
                             f"got {self.distill}" + (" with train_on_validation" if self.train_on_validation else ""))
        if not 0 <= self.min_images_per_second <= 100_000:
            raise ValueError(f"finalize.min_images_per_second must be in [0, 100000] (0: no serving floor), "
                             f"got {self.min_images_per_second}")
        if not 0 <= self.heldout_splits <= 1000:
            raise ValueError(f"finalize.heldout_splits must be in [0, 1000] (0: no held-out estimate), "
                             f"got {self.heldout_splits}")
        if not 0 <= self.refit <= 10:
            raise ValueError(f"finalize.refit must be in [0, 10] (finalists to train), got {self.refit}")
        if not 1.0 <= self.epochs_factor <= 10.0:
            raise ValueError(f"finalize.epochs_factor must be in [1, 10], got {self.epochs_factor}")
        if self.refit_size and not 16 <= self.refit_size <= 512:
            raise ValueError(f"finalize.refit_size must be 0 (unchanged) or in [16, 512], got {self.refit_size}")
        if not 0.0 <= self.share <= 0.9:
            raise ValueError(f"finalize.share must be in [0, 0.9] (of study.timeout), got {self.share}")
        if self.share and not (self.refit or self.train_on_validation or self.distill):
            raise ValueError(f"finalize.share reserves {self.share} of study.timeout for finalists, but finalize.refit "
                             "and finalize.distill are 0 and train_on_validation is off: set one of them")
        if self.tta not in TTA_CHOICES:
            raise ValueError(f"finalize.tta must be one of {TTA_CHOICES}, got {self.tta!r}")
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"finalize.ensemble must be one of {ENSEMBLES}, got {self.ensemble!r}")
        if not 1 <= self.max_members <= 20:
            raise ValueError(f"finalize.max_members must be in [1, 20], got {self.max_members}")
        if not 1 <= self.rounds <= 100:
            raise ValueError(f"finalize.rounds must be in [1, 100], got {self.rounds}")
        if self.min_gain < 0:
            raise ValueError(f"finalize.min_gain must be >= 0, got {self.min_gain}")


@dataclasses.dataclass(frozen=True)
class PromotionConfig:
    """When a registered model takes `@champion`: it must beat the trivial floors (always the largest label,
    chance) and the current champion on the same validation images, each by a paired bootstrap whose
    `confidence` interval of the difference excludes 0; with `min_gain` set, a point gain of at least
    `min_gain` over the champion suffices instead (the floors still need the interval)."""

    confidence: float = 0.95
    min_gain: Optional[float] = None
    resamples: int = 1000

    def __post_init__(self):
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"promotion.confidence must be in [0.5, 1), got {self.confidence}")
        if self.min_gain is not None and self.min_gain < 0:
            raise ValueError(f"promotion.min_gain must be >= 0, got {self.min_gain}")
        if not 100 <= self.resamples <= 100_000:
            raise ValueError(f"promotion.resamples must be in [100, 100000], got {self.resamples}")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What to optimise and for how long."""

    name: str = "camp"
    metric: str = names.VAL_MACRO_F1
    direction: Optional[str] = None
    n_trials: int = 20
    timeout: Optional[float] = None
    max_failures: int = 10
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    # budget-aware stop: no trial starts when the study's median complete trial of its model family
    # would not finish before `timeout` (a trial started at 29 of 30 minutes would run long past it)
    fit_in_timeout: bool = True
    # a running CNN whose epochs would end after `timeout` is cut to the epochs that fit (camp.train's
    # deadline), its schedule still decaying to zero. Off by default: on clothing-small a 20-epoch CNN cut to
    # 14-15 epochs scored val 0.59-0.65 instead of 0.79-0.81 (BENCHMARKS.md), worse than running late
    shorten_to_timeout: bool = False
    # a model family that another family beats at a lower median cost per trial is not started once its
    # complete trials hold this share of the trial time (camp.budget.dominated_by); None: never set aside
    dominated_time_share: Optional[float] = None
    # trials that run first (Optuna's enqueue_trial): each a {preprocess: {...}, model: {...}} of knob
    # values, or {study: NAME, top: N} for the N best complete trials of an earlier study
    warm_start: Optional[list] = None
    # run only queued trials (warm_start, an ablation's cells) and sample none: a worker whose queue is
    # empty stops (`camp ablate` writes its study files with this on)
    queued_only: bool = False
    finalize: FinalizeConfig = FinalizeConfig()
    promotion: PromotionConfig = PromotionConfig()

    def __post_init__(self):
        if self.metric not in names.OBJECTIVES:
            raise ValueError(f"study.metric must be one of {sorted(names.OBJECTIVES)}, got {self.metric!r}")
        if self.direction is None:
            object.__setattr__(self, "direction", names.OBJECTIVES[self.metric])
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"study.direction must be maximize or minimize, got {self.direction!r}")
        if self.n_trials < 1:
            raise ValueError(f"study.n_trials must be >= 1, got {self.n_trials}")
        if not self.name.strip():
            raise ValueError("study.name must not be empty")
        if self.max_failures < 1:
            raise ValueError(f"study.max_failures must be >= 1 (a worker stops after that many failed trials), "
                             f"got {self.max_failures}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"study.timeout must be > 0 seconds, got {self.timeout}")
        if self.dominated_time_share is not None and not 0 <= self.dominated_time_share <= 1:
            raise ValueError(f"study.dominated_time_share must be in [0, 1] or null, got {self.dominated_time_share}")
        if self.warm_start is not None:
            if not isinstance(self.warm_start, (list, tuple)):
                raise ValueError(f"study.warm_start must be a list, got {type(self.warm_start).__name__}")
            for index, entry in enumerate(self.warm_start):
                _check_warm_start(entry, f"study.warm_start[{index}]")
            object.__setattr__(self, "warm_start", tuple(self.warm_start))  # frozen all the way down


def _check_warm_start(entry: Any, where: str) -> None:
    """The shape of one warm-start entry; its knob values are checked against the space by the sweep."""
    if not isinstance(entry, dict) or not entry:
        raise ValueError(f"{where}: expected {{preprocess: {{...}}, model: {{...}}}} or {{study: NAME, top: N}}")
    if "study" in entry:
        unknown = sorted(set(entry) - {"study", "top"}, key=str)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: study, top")
        if not isinstance(entry["study"], str) or not entry["study"]:
            raise ValueError(f"{where}.study: expected a study name, got {entry['study']!r}")
        top = entry.get("top", 1)
        if not isinstance(top, int) or isinstance(top, bool) or top < 1:
            raise ValueError(f"{where}.top: expected an integer >= 1, got {top!r}")
        return
    unknown = sorted(set(entry) - {"preprocess", "model"}, key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: preprocess, model "
                         "(or study, top)")
    for section in ("preprocess", "model"):
        if not isinstance(entry.get(section) or {}, dict):
            raise ValueError(f"{where}.{section}: expected a mapping of knob values")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the dataset is and how to read it."""

    path: Optional[str] = None
    label_map: str = "camp5"
    validation_fraction: float = 0.1
    exclude: Optional[str] = None
    max_per_class: Optional[int] = None

    def __post_init__(self):
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"data.validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise ValueError(f"data.max_per_class must be >= 1, got {self.max_per_class}")


@dataclasses.dataclass(frozen=True)
class StudyFile:
    """A parsed study file: the sections, with the knob sections still raw (fixed values or ranges)."""

    path: str
    study: StudyConfig
    data: DataConfig
    seed: int
    preprocess: dict
    model: dict


SECTIONS = ("study", "data", "seed", "preprocess", "model")


def load_study_file(path: str | os.PathLike) -> StudyFile:
    """Parse and check a study file; the knob sections are validated by `camp.space.parse_space`."""
    document = load_yaml(path, SECTIONS)
    unknown = sorted(set(document) - set(SECTIONS), key=str)
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {', '.join(map(str, unknown))}; allowed: {', '.join(SECTIONS)}")
    seed = document.get("seed", 42)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"{path}: seed must be an integer in [0, 2**32), got {seed!r}")
    for section in ("preprocess", "model"):
        if not isinstance(document.get(section) or {}, dict):
            raise ValueError(f"{path}: {section} must be a mapping of knobs")
    study_section = dict(document.get("study") or {})
    study_section.setdefault("name", Path(path).stem)
    return StudyFile(
        path=str(path),
        study=build_dataclass(StudyConfig, study_section, f"{path}: study"),
        data=build_dataclass(DataConfig, document.get("data"), f"{path}: data"),
        seed=seed,
        preprocess=dict(document.get("preprocess") or {}),
        model=dict(document.get("model") or {}),
    )
