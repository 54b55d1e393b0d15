"""camp.study_plots: parallel coordinates limited to the most important knobs, and the interactive
plotly page written with plotly.js embedded once."""

from __future__ import annotations

import optuna

from camp.study_plots import MAX_KNOBS, important_knobs, study_plots


def _study(trials: int = 30) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        values = [trial.suggest_float(f"model.knob_{index}", 0, 1) for index in range(10)]
        family = trial.suggest_categorical("model.family", ["cnn", "hog_linear"])
        if family == "hog_linear":
            trial.suggest_float("model.hog_c", 0.01, 1, log=True)  # conditional: not in every trial
        trial.suggest_categorical("preprocess.size", [64])  # never varies: no axis for it
        return 3 * values[0] + values[1] + 0.01 * sum(values[2:])

    study.optimize(objective, n_trials=trials)
    return study


def test_important_knobs_are_capped_ranked_and_leave_out_constants():
    knobs = important_knobs(_study())
    assert len(knobs) == MAX_KNOBS and len(set(knobs)) == MAX_KNOBS
    assert knobs[0] == "model.knob_0"  # it drives the objective
    assert "preprocess.size" not in knobs


def test_study_plots_writes_pngs_and_one_interactive_page(tmp_path):
    study_plots(_study(), tmp_path)
    for name in ("optimization_history.png", "param_importances.png", "parallel_coordinate.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    page = (tmp_path / "study_plots.html").read_text()
    assert f"Parallel coordinates ({MAX_KNOBS} most important knobs)" in page and "Slices" in page
    assert page.count("plotly.js v") == 1  # the library embedded once: the page opens offline


def test_a_study_without_complete_trials_leaves_notes_not_errors(tmp_path):
    study = optuna.create_study()
    study_plots(study, tmp_path)
    assert (tmp_path / "study_plots.html").is_file()
    assert any(path.suffix == ".txt" for path in tmp_path.iterdir()) or (tmp_path / "optimization_history.png").is_file()
