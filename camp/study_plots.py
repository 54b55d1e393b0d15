"""Pictures of a study, logged with the sweep's parent run (`study/`): optimization history, parameter
importances and parallel coordinates as PNGs, and the same plus slices as one interactive plotly page
(`study_plots.html`, plotly.js embedded once, so it opens with no network). Parallel coordinates and
slices show only the most important knobs (`MAX_KNOBS`): with every knob of a study the axes cannot be
read.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

MAX_KNOBS = 6
_DRAWING_ERRORS = (ValueError, RuntimeError, ZeroDivisionError, IndexError, KeyError)


def important_knobs(study: optuna.Study, limit: int = MAX_KNOBS) -> list[str]:
    """Up to `limit` params, most important first (Optuna's importances over the params every complete
    trial has); then the params most trials have, so conditional knobs can still appear."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    ranked: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranked = list(optuna.importance.get_param_importances(study))
    except _DRAWING_ERRORS:
        pass
    counts: dict[str, int] = {}
    for trial in complete:
        for name in trial.params:
            counts[name] = counts.get(name, 0) + 1
    varied = {name for name in counts if len({repr(t.params.get(name)) for t in complete if name in t.params}) > 1}
    ordered = [name for name in ranked if name in varied]
    ordered += sorted((name for name in varied if name not in ordered), key=lambda name: -counts[name])
    return ordered[:limit]


def study_plots(study: optuna.Study, directory: Path) -> None:
    """The PNGs and the HTML page under `directory`; a plot that cannot be drawn leaves a `.txt` saying why."""
    knobs = important_knobs(study) or None
    _pngs(study, directory, knobs)
    _html(study, directory / "study_plots.html", knobs)


def save_png(draw, path: Path, size: tuple[float, float] = (11, 6), dpi: int = 100):
    """Draw one Optuna matplotlib plot (`draw()` returns its axes) into `path`; returns the path, or why it
    could not be drawn (the sweep's parent run and `camp report` both draw through this)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = draw()
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(*size)
        figure.tight_layout()
        figure.savefig(path, dpi=dpi)
        plt.close(figure)
        return path
    except _DRAWING_ERRORS as error:
        return str(error) or type(error).__name__


def _pngs(study: optuna.Study, directory: Path, knobs: list[str] | None) -> None:
    from optuna.visualization import matplotlib as optuna_plots

    plots = {"optimization_history.png": lambda: optuna_plots.plot_optimization_history(study),
             "param_importances.png": lambda: optuna_plots.plot_param_importances(study),
             "parallel_coordinate.png": lambda: optuna_plots.plot_parallel_coordinate(study, params=knobs)}
    for name, plot in plots.items():
        drawn = save_png(plot, directory / name)
        if not isinstance(drawn, Path):
            (directory / name.replace(".png", ".txt")).write_text(f"not drawn: {drawn}\n")


def _html(study: optuna.Study, path: Path, knobs: list[str] | None) -> None:
    from optuna import visualization

    plots = [("Optimization history", lambda: visualization.plot_optimization_history(study)),
             ("Parameter importances", lambda: visualization.plot_param_importances(study)),
             (f"Parallel coordinates ({len(knobs or [])} most important knobs)",
              lambda: visualization.plot_parallel_coordinate(study, params=knobs)),
             ("Slices (the same knobs)", lambda: visualization.plot_slice(study, params=knobs))]
    parts, skipped, embedded = [], [], False
    for title, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figure = plot()
        except _DRAWING_ERRORS as error:
            skipped.append(f"<p>{title}: not drawn ({error})</p>")
            continue
        parts.append(f"<h2>{title}</h2>" + figure.to_html(full_html=False, include_plotlyjs=not embedded))
        embedded = True
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>study {study.study_name}</title></head>"
                    f"<body><h1>Study {study.study_name}</h1>{''.join(parts + skipped)}</body></html>", encoding="utf-8")
