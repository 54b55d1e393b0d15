"""One run's resolved config (`RunConfig`), how a study file or a logged bundle turns into one, and the
dataset it names (loaded and fingerprinted once per process)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from camp import names
from camp.config import DataConfig, StudyFile
from camp.data import Dataset, duplicates_across_splits, file_digest, fingerprint, load_dataset, resolve_data_path
from camp.images import UnreadableImage, decode_path
from camp.model import ModelConfig
from camp.preprocess import PreprocessConfig
from camp.space import parse_space, resolve
from camp.typed_yaml import build_dataclass

FIT_ON = ("train", names.TRAIN_AND_VALIDATION)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; `camp train FILE` and each sweep trial resolve to one of these."""

    data: DataConfig = DataConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    seed: int = 42
    metric: str = names.VAL_MACRO_F1
    direction: str = "maximize"
    data_path: Optional[str] = None  # --data, overrides data.path
    # what the model is fit on: train (validation selects the epoch and scores it), or train+validation
    # (camp.refit_full: a fixed number of epochs, and test scores it)
    fit_on: str = "train"

    def __post_init__(self):
        if self.fit_on not in FIT_ON:
            raise ValueError(f"fit_on must be one of {FIT_ON}, got {self.fit_on!r}")

    @property
    def scored_on(self) -> str:
        """The split that scores the model: the one it was not fit on."""
        return "test" if self.fit_on == names.TRAIN_AND_VALIDATION else "validation"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_config_from(study_file: StudyFile, preprocess_values: dict, model_values: dict,
                    data_path: str | None = None) -> RunConfig:
    where = study_file.path
    return RunConfig(
        data=study_file.data,
        preprocess=build_dataclass(PreprocessConfig, preprocess_values, f"{where}: preprocess"),
        model=build_dataclass(ModelConfig, model_values, f"{where}: model"),
        seed=study_file.seed,
        metric=study_file.study.metric,
        direction=study_file.study.direction,
        data_path=data_path,
    )


def fixed_run_config(study_file: StudyFile, data_path: str | None = None) -> RunConfig:
    """The run a study file describes when every knob is fixed (e.g. sweeps/baseline.yaml)."""
    pre = parse_space("preprocess", study_file.preprocess, PreprocessConfig, study_file.path)
    mod = parse_space("model", study_file.model, ModelConfig, study_file.path)
    return run_config_from(study_file, resolve(pre, defaults=dataclasses.asdict(PreprocessConfig())),
                           resolve(mod, defaults=dataclasses.asdict(ModelConfig())), data_path)


_DATASETS: dict = {}
LEAKS: dict = {}  # data fingerprint -> groups of identical files in different splits


def prepare_dataset(config: RunConfig) -> tuple[Dataset, str]:
    """The dataset and its fingerprint (memoised per process: sweeps ask for it once per trial)."""
    root = resolve_data_path(config.data_path, config.data.path)
    key = (str(root.resolve()), config.data, config.seed)
    if key not in _DATASETS:
        dataset = load_dataset(root, config.data.label_map, config.data.validation_fraction, config.seed,
                               config.data.exclude, config.data.max_per_class)
        digests = [file_digest(item.path) for item in dataset.items]  # one read of every file serves both
        data_fp = fingerprint(dataset.items, digests)
        LEAKS[data_fp] = duplicates_across_splits(dataset.items, digests)
        _DATASETS[key] = (dataset, data_fp)
    return _DATASETS[key]


def run_config_from_meta(meta: dict) -> RunConfig:
    """The config a run logged in its bundle's `camp.json`: registration and the report read this, never
    a trial re-resolved from a study file that may have changed since. It comes back fit on train only,
    whatever the run was fit on: what re-uses a config (ablate's cells, the report's folds) needs validation
    held out, and a model fit on train + validation says so in its run's tag `camp.fit_on`."""
    raw = dict(meta["config"])
    return RunConfig(data=DataConfig(**raw["data"]), preprocess=PreprocessConfig(**raw["preprocess"]),
                     model=ModelConfig(**raw["model"]), seed=raw["seed"], metric=raw["metric"],
                     direction=raw["direction"], data_path=raw.get("data_path"))


def validation_paths(meta: dict) -> list[str]:
    """The paths of the run's validation images (readable or not: a reader reports its own errors)."""
    dataset, _ = prepare_dataset(run_config_from_meta(meta))
    return [item.path for item in dataset.split("validation")]


def first_validation_path(meta: dict) -> str:
    """The first readable validation image of the run's dataset, for the model's input example."""
    dataset, _ = prepare_dataset(run_config_from_meta(meta))
    for item in dataset.split("validation"):
        try:
            decode_path(item.path, 4)
            return item.path
        except UnreadableImage:
            continue
    raise ValueError(f"{dataset.root}: no readable validation image to use as the model's input example")
