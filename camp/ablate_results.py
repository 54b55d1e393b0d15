"""An ablation's cells and its conclusion: a cell's identity (`params_key`, `trial_key`), every complete cell
scored on validation and on the verdict's split (test predicted once by the cell's bundle and kept as an
artifact), the values of each varied knob compared (`camp.ablate_stats`), and the document written and
logged: ablation.json, ablation.md (`render_markdown`) and ablation.png.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np

from camp import names
from camp.ablate_stats import knob_result
from camp.evaluation import split_predictions
from camp.plots import ablation_plot
from camp.registry import CampClassifier
from camp.run_config import RunConfig, prepare_dataset
from camp.sweep_summary import STATE


def params_key(params: dict) -> str:
    """One cell's identity, as its params (a trial's `fixed_params`, which enqueue_trial stores) in JSON."""
    return json.dumps(params, sort_keys=True)


def trial_key(trial) -> str:
    """The cell an Optuna trial ran."""
    return params_key(trial.system_attrs.get("fixed_params", trial.params))


def conclude(study, cells, varies, sets: dict, config, info, name, args) -> int:
    """Score every complete cell on validation and test, compare, print and log the verdicts (`sets`: the
    knobs held at other values than the base's, `config`: the base as held)."""
    mlflow.set_tags({names.ABLATION_BASE_RUN: info["version_run_id"] or info["run_id"] or "",
                     names.ABLATION_KNOBS: ",".join(knob for knob, _ in varies)})
    dataset, fingerprint = prepare_dataset(config)
    mlflow.set_tag(names.DATA_FINGERPRINT, fingerprint)
    split = args.split if dataset.split(args.split) else "validation"
    done = {}
    for trial in study.get_trials(deepcopy=False, states=(STATE.COMPLETE,)):
        done.setdefault(trial_key(trial), trial.user_attrs["mlflow_run_id"])
    missing = [cell for cell in cells if cell.key not in done]
    scored = {cell.key: _cell_outputs(done[cell.key], dataset, split) for cell in cells if cell.key in done}
    results = []
    for knob, values in varies:
        outputs = {}
        for cell in cells:
            if cell.key in scored and all(cell.params[k] == config_value(config, k) for k, _ in varies if k != knob):
                outputs[(cell.params[knob], cell.replica)] = scored[cell.key]
        outputs = _aligned(outputs)
        if len({value for value, _ in outputs}) >= 2:
            results.append(knob_result(knob, values, outputs, list(dataset.labels), config.metric,
                                       config.direction, split, args.bootstrap))
    document = {"name": name, "base": info, "seeds": max(c.replica for c in cells) + 1, "split": split,
                "data_fingerprint": fingerprint, "knobs": results,
                "held": sets,
                "missing": [f"{c.label} (replica {c.replica})" for c in missing]}
    out = Path(args.out or f"reports/ablations/{name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(document, indent=2, default=str))
    if results:
        ablation_plot(results, out / "ablation.png")
    (out / "ablation.md").write_text(render_markdown(document), encoding="utf-8")
    mlflow.log_artifacts(str(out), "ablation")
    print(render_markdown(document))
    print(f"ablation {name}: {out / 'ablation.md'} (logged with MLflow run {name})")
    if missing:
        print(f"camp: {len(missing)} cell(s) did not complete: {', '.join(document['missing'])}; rerun the same "
              "command to run only those", file=sys.stderr)
        return 1
    return 0


def config_value(config: RunConfig, knob: str):
    section, name = knob.split(".", 1)
    return getattr(getattr(config, section), name)


def _cell_outputs(run_id: str, dataset, split: str) -> dict:
    """{split: {relpath: (label, probabilities)}} of one cell's model: validation from its
    val_predictions.json; `split` (test) predicted by its bundle once and kept as test_predictions.json."""
    client = mlflow.MlflowClient()
    val = mlflow.artifacts.load_dict(f"runs:/{run_id}/val_predictions.json")
    out = {"validation": dict(zip(val["relpaths"], zip(val["y_true"], val["probabilities"])))}
    if split == "validation":
        return out
    artifact = f"{split}_predictions.json"
    try:
        other = mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact}")
    except Exception:  # noqa: BLE001 - not scored yet (the first conclusion after the cell ran)
        with tempfile.TemporaryDirectory() as directory:
            bundle = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle", dst_path=directory)
            other = split_predictions(CampClassifier().load_bundle(bundle), dataset, split)
        other["probabilities"] = other["probabilities"].round(6).tolist()
        client.log_dict(run_id, other, artifact)
    out[split] = dict(zip(other["relpaths"], zip(other["y_true"], other["probabilities"])))
    return out


def _aligned(outputs: dict) -> dict:
    """The same outputs as {split: (y, probabilities)} arrays over the items every cell scored."""
    if not outputs:
        return {}
    aligned = {}
    splits = set.intersection(*(set(o) for o in outputs.values()))
    for split in splits:
        shared = sorted(set.intersection(*(set(o[split]) for o in outputs.values())))
        for key, o in outputs.items():
            aligned.setdefault(key, {})[split] = (np.array([o[split][r][0] for r in shared]),
                                                  np.array([o[split][r][1] for r in shared], dtype=np.float64))
    return aligned


def render_markdown(document: dict) -> str:
    """The ablation's tables and verdicts (printed, ablation.md, and the report's sections)."""
    lines = [f"# Ablation {document['name']}", "",
             f"Base: {document['base']['source']}" + (f", {document['base']['member']}" if document["base"].get("member") else "")
             + f"; held: {', '.join(f'{k}={v}' for k, v in document['held'].items()) or 'as the base'}; "
             f"{document['seeds']} seed(s) "
             f"per value; verdicts on {document['split']}, paired on the same images and seeds (bootstrap over both).", ""]
    for result in document["knobs"]:
        labels = list(result["rows"][0]["recall"]) if result["rows"] else []
        scored = result["column"] != "val"  # verdicts on validation: its column is already there
        lines += [f"## {result['knob']}", "", "| value | seeds | validation | " + (result["split"] + " | " if scored else "")
                  + " | ".join(f"recall {label}" for label in labels) + " |",
                  "|---" * (3 + scored + len(labels)) + "|"]
        for row in result["rows"]:
            lines.append(f"| {row['value']} | {row['seeds']} | {row['val']} | "
                         + (f"{row[result['column']]} | " if scored else "")
                         + " | ".join(str(row["recall"].get(label)) for label in labels) + " |")
        lines += [""] + [f"- {pair['verdict']}" for pair in result["pairs"]] + [""]
    if document["missing"]:
        lines.append(f"Not complete (rerun to run them): {', '.join(document['missing'])}")
    return "\n".join(lines)
