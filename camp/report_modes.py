"""Section 3 of `camp report`: colour vs gray vs binary. The best complete trial of each preprocessing mode,
its objective recomputed from its validation predictions with a bootstrap interval, a chart of the
intervals, and a verdict in plain words only where the intervals do not overlap (`verdicts`); an ablation
of `preprocess.mode`, where one exists, comes first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from camp import metrics, names
from camp.report_ablation import ablation_blocks
from camp.report_context import Context
from camp.report_html import Heading, Picture, Table, Text

MODES = ("color", "gray", "binary")


def verdicts(results: dict, maximize: bool) -> list[str]:
    """Plain-words comparisons of {name: (value, low, high)}: a winner only when intervals do not overlap."""
    names = sorted(results, key=lambda name: results[name][0], reverse=maximize)
    lines = []
    for position, first in enumerate(names):
        for second in names[position + 1:]:
            (v1, l1, h1), (v2, l2, h2) = results[first], results[second]
            if h2 < l1 or h1 < l2:
                lines.append(f"**{first} beats {second}**: {v1:.3f} [{l1:.3f}, {h1:.3f}] vs {v2:.3f} "
                             f"[{l2:.3f}, {h2:.3f}]; the 95% intervals do not overlap.")
            else:
                lines.append(f"{first} vs {second}: no verdict — the 95% intervals overlap ({v1:.3f} "
                             f"[{l1:.3f}, {h1:.3f}] vs {v2:.3f} [{l2:.3f}, {h2:.3f}]), so this validation set "
                             "cannot tell them apart.")
    return lines


def best_by(trials: list, key: str, values, maximize: bool) -> dict:
    """The best trial for each value of param `key` (e.g. each preprocess.mode), in the order of `values`."""
    best = {}
    for trial in trials:
        value = trial["params"].get(key)
        if value not in values:
            continue
        if value not in best or names.better(trial["value"], best[value]["value"], "maximize" if maximize else "minimize"):
            best[value] = trial
    return {value: best[value] for value in values if value in best}


def modes_section(context: Context) -> list:
    blocks = [Heading("3. Colour vs gray vs binary", anchor="modes"), *ablation_blocks(context, "preprocess.mode")]
    study, trials = context.study()
    if study is None:
        return blocks + [Text(f"No study to compare: {trials}.")]
    config = context.config
    maximize = config.direction == "maximize"
    best = best_by(trials, "preprocess.mode", MODES, maximize)
    rows, results = [], {}
    for mode in MODES:
        if mode not in best:
            rows.append([mode, "no complete trial", None, None, None, None])
            continue
        trial = best[mode]
        p = context.trial_predictions(trial["run_id"])
        y, predicted, probabilities = np.array(p["y_true"]), np.array(p["y_pred"]), np.array(p["probabilities"])
        value = metrics.value(config.metric, y, predicted, probabilities)
        outputs = probabilities if config.metric.endswith("/loss") else predicted
        low, high = metrics.bootstrap_interval(config.metric, y, outputs, context.args.bootstrap)
        results[mode] = (value, low, high)
        rows.append([mode, f"#{trial['number']}", float(trial["value"]), value, low, high])
    context.numbers["modes"] = {m: {"trial": best[m]["number"], "objective": best[m]["value"], "value": v,
                                    "ci95": [lo, hi]} for m, (v, lo, hi) in results.items()}
    blocks += [Text(f"The best complete trial of each preprocessing mode in study `{study.study_name}`, its objective "
                    f"value, the same `{config.metric}` recomputed from the trial's validation predictions, and a 95% "
                    f"bootstrap interval ({context.args.bootstrap} resamples of the validation images, percentile)."),
               Table(["mode", "best trial", "objective", "recomputed", "95% low", "95% high"], rows, anchor="modes-table")]
    if results:
        blocks.append(Picture(Path(_interval_chart(results, config.metric, context.out / "modes.png").name),
                              "best trial per mode with 95% bootstrap interval", 560))
    lines = verdicts(results, maximize)
    blocks += [Text("Verdict: " + line) for line in lines] or [Text("Verdict: only one mode has a complete trial.")]
    context.numbers["modes_verdicts"] = lines
    return blocks


def _interval_chart(results: dict, metric: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    names = list(results)
    values = np.array([results[n][0] for n in names])
    errors = np.array([[results[n][0] - results[n][1], results[n][2] - results[n][0]] for n in names]).T
    figure, axes = plt.subplots(figsize=(5.5, 3))
    axes.errorbar(names, values, yerr=errors, fmt="o", capsize=8)
    axes.set_ylabel(metric)
    axes.set_title("best trial per mode, 95% bootstrap interval")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
