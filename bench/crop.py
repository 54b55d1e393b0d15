"""Crop methods on real photos: speed, how much of the frame the box keeps, and a contact sheet.

    .venv/bin/python bench/crop.py --data data/clothing-small --n 400 --out bench/results

For each crop method, on `--n` seeded training images of clothing-small (decoded once, not timed):
images/s of `preprocess_steps` (one thread; wall clock, and per CPU second, which a busy machine
disturbs less), the box area as a fraction of the working frame (median, quartiles), the fraction
of boxes >= 95% of the frame (a crop that does nothing), and the mean box IoU on the synthetic
garment set of tests/garments.py (known boxes). Knobs default to mode gray, size 48; prints JSON;
writes `crop-<method>.png` (40 random images, box in red, mask outline in green) under --out.
`--set knob=value` changes a preprocess knob for every method (e.g. --set crop_top=0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camp.data import load_dataset  # noqa: E402
from camp.images import decode_path  # noqa: E402
from camp.preprocess import CROP_METHODS, PreprocessConfig, preprocess_steps  # noqa: E402
from tests.garments import iou, make_set  # noqa: E402

WHOLE_FRAME = 0.95


def parse_sets(pairs: list[str]) -> dict:
    values = {}
    fields = {field.name: field.type for field in dataclasses.fields(PreprocessConfig)}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        if name not in fields:
            raise SystemExit(f"--set: unknown knob {name!r}")
        kind = fields[name]
        values[name] = raw.lower() in ("1", "true", "yes") if kind == "bool" else \
            int(raw) if kind == "int" else float(raw) if kind == "float" else raw
    return values


def synthetic_iou(config: PreprocessConfig, scenes) -> dict:
    """Mean box IoU per background on the synthetic scenes, boxes found on the whole image."""
    whole = dataclasses.replace(config, crop_top=0.0, crop_bottom=0.0, crop_left=0.0, crop_right=0.0, scale=1.0)
    by_background: dict[str, list[float]] = {}
    for background, _, image, truth, _ in scenes:
        by_background.setdefault(background, []).append(iou(preprocess_steps(image, whole, reduction=1).box, truth))
    out = {name: round(float(np.mean(values)), 3) for name, values in by_background.items()}
    out["mean"] = round(float(np.mean([v for values in by_background.values() for v in values])), 3)
    return out


def contact_sheet(images, config: PreprocessConfig, path: Path, columns: int = 8, tile: int = 160) -> None:
    """Each image's working frame letterboxed into a tile: box in red, mask outline in green."""
    tiles = []
    for image in images:
        steps = preprocess_steps(image, config)
        working = steps.working.copy()
        contours, _ = cv2.findContours(steps.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(working, contours, -1, (0, 220, 0), 1)
        x, y, w, h = steps.box
        cv2.rectangle(working, (x, y), (x + w - 1, y + h - 1), (0, 0, 255), 2)
        scale = (tile - 4) / max(working.shape[:2])
        small = cv2.resize(working, (max(1, round(working.shape[1] * scale)), max(1, round(working.shape[0] * scale))))
        canvas = np.full((tile, tile, 3), 255, np.uint8)
        top, left = (tile - small.shape[0]) // 2, (tile - small.shape[1]) // 2
        canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
        tiles.append(canvas)
    tiles += [np.full((tile, tile, 3), 255, np.uint8)] * (-len(tiles) % columns)
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/clothing-small")
    parser.add_argument("--n", type=int, default=400, help="training images to sample (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(CROP_METHODS), choices=CROP_METHODS)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KNOB=VALUE")
    parser.add_argument("--synthetic", type=int, default=10, help="synthetic scenes per background (0: skip)")
    parser.add_argument("--sheet", type=int, default=40, help="images on each contact sheet (0: none)")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)

    overrides = {"mode": "gray", "size": 48, **parse_sets(args.sets)}
    items = load_dataset(args.data, "camp5", seed=args.seed).split("train")
    rng = np.random.default_rng(args.seed)
    chosen = [items[i] for i in sorted(rng.choice(len(items), size=min(args.n, len(items)), replace=False))]
    reduction = PreprocessConfig(**overrides).decode_reduction
    images = [decode_path(item.path, reduction) for item in chosen]
    sheet = [images[i] for i in sorted(rng.choice(len(images), size=min(args.sheet, len(images)), replace=False))]
    scenes = make_set(args.synthetic, seed=args.seed) if args.synthetic else []
    cv2.setNumThreads(1)
    report = {"data": str(args.data), "n": len(images), "seed": args.seed, "knobs": overrides, "methods": {}}
    for method in args.methods:
        config = PreprocessConfig(**{**overrides, "crop_method": method})
        areas = []
        start, cpu_start = time.perf_counter(), time.process_time()
        for image in images:
            steps = preprocess_steps(image, config)
            x, y, w, h = steps.box
            areas.append(w * h / (steps.working.shape[0] * steps.working.shape[1]))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        q1, median, q3 = np.percentile(areas, [25, 50, 75])
        result = {"images_per_s": round(len(images) / seconds, 1),
                  "images_per_cpu_s": round(len(images) / max(cpu_seconds, 1e-9), 1),
                  "box_area": {"q1": round(float(q1), 3), "median": round(float(median), 3), "q3": round(float(q3), 3),
                               "mean": round(float(np.mean(areas)), 3)},
                  "whole_frame_fraction": round(float(np.mean(np.array(areas) >= WHOLE_FRAME)), 3)}
        if scenes:
            result["synthetic_iou"] = synthetic_iou(config, scenes)
        if sheet:
            path = Path(args.out) / f"crop-{method}.png"
            contact_sheet(sheet, config, path)
            result["sheet"] = str(path)
        report["methods"][method] = result
        print(f"{method}: {json.dumps(result)}", file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
