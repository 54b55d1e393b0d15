"""Datasets: find the images, map source classes to camp labels, split, fingerprint, count.

Two layouts: image folders (`<split>/<class>/*.jpg|png`, or `<class>/*` for one split) and a CSV
manifest (`path,label[,split]`, paths relative to the CSV). A dataset without a validation split
gets a seeded, stratified one carved from train. Raw images are only ever read.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "valid": "validation", "test": "test"}
LABEL_MAP_DIR = Path(__file__).parent / "labelmaps"
DEFAULT_DATA = Path("data/clothing-small")
GET_DATA_HINT = (
    "run `make data` (links ../shared/datasets/clothing-small when present, else clones "
    "https://github.com/alexeygrigorev/clothing-dataset-small), or pass --data DIR / set CAMP_DATA"
)


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """Source class -> camp label; `drop` names source classes left out, with the reason."""

    name: str
    labels: tuple[str, ...]
    mapping: dict
    drop: dict

    def label_of(self, source: str, where: str) -> str | None:
        if source in self.mapping:
            return self.mapping[source]
        if source in self.drop:
            return None
        raise ValueError(
            f"{where}: label {source!r} is not in label map {self.name!r} "
            f"(known: {', '.join(sorted(self.mapping))}; dropped: {', '.join(sorted(self.drop)) or 'none'}); "
            f"fix the label, or give a label-map YAML (data.label_map / --label-map) that maps or drops it"
        )


def printable(text: str) -> str:
    """A file name for people and for libraries that take only valid UTF-8 (Arrow, matplotlib's fonts): a
    name that is not UTF-8, held by Python as surrogate escapes, shows its bytes as `\\xff`."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def load_label_map(name_or_path: str) -> LabelMap:
    """A label map by name (`camp5`, `identity`) or path to a YAML file with labels/map/drop."""
    path = Path(name_or_path)
    if not path.suffix:
        path = LABEL_MAP_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in LABEL_MAP_DIR.glob("*.yaml")))
        raise ValueError(f"data.label_map: no label map {name_or_path!r} (built in: {known}; or a path to a YAML file)")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ValueError(f"{path}: YAML syntax error at {at}{getattr(error, 'problem', None) or error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a label map is a mapping with keys labels, map, drop; got {type(document).__name__}")
    unknown = set(document) - {"labels", "map", "drop"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; allowed: labels, map, drop")
    raw_labels = document.get("labels") or []
    if not isinstance(raw_labels, list) or not all(isinstance(label, str) for label in raw_labels):
        raise ValueError(f"{path}: `labels` must be a list of names, e.g. [tops, shoes]; got {raw_labels!r}")
    labels = tuple(raw_labels)
    for key in ("map", "drop"):
        if not isinstance(document.get(key) or {}, dict):
            raise ValueError(f"{path}: `{key}` must be a mapping {{source class: "
                             f"{'label' if key == 'map' else 'reason'}}}; got {document[key]!r}")
    mapping = {str(source): target for source, target in (document.get("map") or {}).items()}
    if not labels:
        raise ValueError(f"{path}: `labels` must list at least one label")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: `labels` lists a label twice: {list(labels)}")
    bad = sorted({target for target in mapping.values() if target not in labels})
    if bad:
        raise ValueError(f"{path}: map targets {bad} are not among labels {list(labels)}")
    drop = {str(source): reason for source, reason in (document.get("drop") or {}).items()}
    return LabelMap(name=path.stem, labels=labels, mapping=mapping, drop=drop)


@dataclasses.dataclass(frozen=True)
class Item:
    """One image: where it is, its source class, its camp label index and its split."""

    path: str
    relpath: str
    source: str
    label: int
    split: str


@dataclasses.dataclass
class Dataset:
    """The items of every split, the label names, and what was left out."""

    root: Path
    labels: tuple[str, ...]
    items: list[Item]
    dropped: dict  # source class -> count, with the label map's reason in `drop_reasons`
    drop_reasons: dict
    excluded: list[str] = dataclasses.field(default_factory=list)
    derived_validation: bool = False

    def split(self, name: str) -> list[Item]:
        return [item for item in self.items if item.split == name]

    @property
    def splits(self) -> list[str]:
        return [name for name in SPLITS if any(item.split == name for item in self.items)]

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for split in self.splits:
            counter = Counter(self.labels[item.label] for item in self.split(split))
            out[split] = {label: counter.get(label, 0) for label in self.labels}
        return out


def resolve_data_path(cli_path: str | None = None, config_path: str | None = None) -> Path:
    """--data, else the study file's data.path, else CAMP_DATA, else data/clothing-small."""
    for candidate in (cli_path, config_path, os.environ.get("CAMP_DATA"), DEFAULT_DATA):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"dataset not found at {path}: {GET_DATA_HINT}")
            return path
    raise FileNotFoundError(GET_DATA_HINT)  # unreachable: DEFAULT_DATA is always a candidate


def _source_files(root: Path, label_map: LabelMap) -> list[tuple[Path, str, str, str]]:
    """(file, source class, split, where to point at in an error) for an image-folder tree or manifest."""
    if root.is_file() and root.suffix.lower() == ".csv":
        return _manifest_files(root)
    manifest = root / "manifest.csv"
    if manifest.is_file():
        return _manifest_files(manifest)
    split_dirs = [child for child in _listing(root) if child.is_dir() and child.name.lower() in SPLIT_ALIASES]
    layout = [(SPLIT_ALIASES[d.name.lower()], d) for d in split_dirs] or [("train", root)]
    files = []
    for split, split_dir in layout:
        for class_dir in (child for child in _listing(split_dir) if child.is_dir()):
            for file in _listing(class_dir):  # an empty class folder adds nothing (its label counts 0)
                if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                    files.append((file, class_dir.name, split, str(file)))
    if not files:
        raise ValueError(f"{root}: no images found; expected <split>/<class>/*.jpg, <class>/*.jpg or manifest.csv")
    return files


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as error:
        raise ValueError(f"{folder}: cannot list the folder ({error.strerror or error}); check that this user "
                         "may read it") from None


FOLD_COLUMN = "camp_fold"  # marks a manifest camp wrote itself (label-noise folds): file names as on disk


def _manifest_files(manifest: Path) -> list[tuple[Path, str, str, str]]:
    try:
        return _read_manifest(manifest)
    except UnicodeDecodeError as error:
        if FOLD_COLUMN.encode() in manifest.read_bytes().split(b"\n", 1)[0]:  # names that are not UTF-8
            return _read_manifest(manifest, errors="surrogateescape")
        raise ValueError(f"{manifest}: not UTF-8 text ({error.reason} at byte {error.start}); save the CSV as "
                         "UTF-8") from None
    except csv.Error as error:
        raise ValueError(f"{manifest}: not a readable CSV ({error})") from None


def _read_manifest(manifest: Path, errors: str = "strict") -> list[tuple[Path, str, str, str]]:
    with manifest.open(newline="", encoding="utf-8-sig", errors=errors) as handle:  # -sig: a spreadsheet's BOM
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if not {"path", "label"} <= columns:
            raise ValueError(f"{manifest}: a manifest needs columns path,label[,split]; found {sorted(columns)}")
        files = []
        for line, row in enumerate(reader, start=2):
            split = SPLIT_ALIASES.get((row.get("split") or "train").strip().lower())
            if split is None:
                raise ValueError(f"{manifest}: line {line}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
            if not (row.get("path") or "").strip() or not (row.get("label") or "").strip():
                raise ValueError(f"{manifest}: line {line}: needs a path and a label, got {row!r}")
            where = f"{manifest}: line {line} ({row['path'].strip()})"
            files.append((manifest.parent / row["path"].strip(), row["label"].strip(), split, where))
    return files


def load_dataset(root: str | Path, label_map: str | LabelMap = "camp5", validation_fraction: float = 0.1,
                 seed: int = 0, exclude: str | None = None, max_per_class: int | None = None) -> Dataset:
    """Read a dataset's file list and labels (no image is decoded here)."""
    root = Path(root)
    label_map = load_label_map(label_map) if isinstance(label_map, str) else label_map
    base = root.parent if root.is_file() else root
    items, dropped = [], Counter()
    for file, source, split, where in _source_files(root, label_map):
        label = label_map.label_of(source, where)
        if label is None:
            dropped[source] += 1
            continue
        relpath = os.path.relpath(file, base)
        items.append(Item(str(file), relpath, source, label_map.labels.index(label), split))
    dataset = Dataset(root, label_map.labels, items, dict(dropped), {k: label_map.drop[k] for k in dropped})
    if exclude:
        _apply_exclusions(dataset, Path(exclude))
    if max_per_class:
        dataset.items = _subsample(dataset.items, max_per_class, seed)
    if not dataset.split("validation"):
        dataset.items = _derive_validation(dataset.items, validation_fraction, seed)
        dataset.derived_validation = True
    return dataset


def _apply_exclusions(dataset: Dataset, exclude: Path) -> None:
    """Drop training items listed (by relative path) in an exclusion file; other splits never change."""
    if not exclude.is_file():
        raise ValueError(f"data.exclude: no such file {exclude}")
    listed = set()
    for line in exclude.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            listed.add(entry)
    dataset.excluded = sorted(item.relpath for item in dataset.items if item.split == "train" and item.relpath in listed)
    dataset.items = [item for item in dataset.items if not (item.split == "train" and item.relpath in listed)]


def _subsample(items: list[Item], max_per_class: int, seed: int) -> list[Item]:
    rng = np.random.default_rng(seed)
    kept = []
    groups: dict[tuple, list[Item]] = {}
    for item in items:
        groups.setdefault((item.split, item.label), []).append(item)
    for key in sorted(groups):
        group = groups[key]
        chosen = sorted(rng.choice(len(group), size=min(max_per_class, len(group)), replace=False))
        kept.extend(group[index] for index in chosen)
    return kept


def _derive_validation(items: list[Item], fraction: float, seed: int) -> list[Item]:
    """Move a seeded, stratified `fraction` of each label's train items to validation."""
    rng = np.random.default_rng(seed)
    moved = set()
    by_label: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        if item.split == "train":
            by_label.setdefault(item.label, []).append(index)
    for label in sorted(by_label):
        indices = by_label[label]
        count = int(round(len(indices) * fraction))
        if len(indices) >= 2:
            count = min(max(count, 1), len(indices) - 1)
            moved.update(rng.choice(indices, size=count, replace=False).tolist())
    return [dataclasses.replace(item, split="validation") if index in moved else item for index, item in enumerate(items)]


def file_digest(path: str) -> str:
    """Content hash of one file (empty string when unreadable)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.blake2b(handle.read(), digest_size=16).hexdigest()
    except OSError:
        return ""


def fingerprint(items: list[Item], digests: list[str] | None = None) -> str:
    """A hash of the item list: relative paths, labels, splits and file contents (`digests`: the
    items' `file_digest`s when the caller already has them)."""
    digests = digests if digests is not None else [file_digest(item.path) for item in items]
    digest = hashlib.blake2b(digest_size=12)
    for item, content in zip(items, digests):
        line = f"{item.relpath}|{item.label}|{item.split}|{content}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))  # file names need not be UTF-8
    return digest.hexdigest()


def duplicates_across_splits(items: list[Item], digests: list[str] | None = None) -> list[list[str]]:
    """Groups of files with identical bytes that sit in different splits (train/test leakage)."""
    digests = digests if digests is not None else [file_digest(item.path) for item in items]
    by_digest: dict[str, list[Item]] = {}
    for item, digest in zip(items, digests):
        if digest:
            by_digest.setdefault(digest, []).append(item)
    return [sorted(f"{i.split}:{i.relpath}" for i in group) for group in by_digest.values()
            if len({i.split for i in group}) > 1]
