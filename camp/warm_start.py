"""Warm start: the trials a study runs first (`study.warm_start` in the study file), as Optuna
`enqueue_trial` parameters.

An entry is either knob values, `{preprocess: {...}, model: {...}}`, or `{study: NAME, top: N}`: the N
best complete trials of an earlier study in the same storage. Knob values are checked against this
study's space before any trial runs: a searched knob's value must lie in its range or choices, a fixed
knob's must equal it, and a name the study does not have is an error naming it. Knobs a warm start
leaves out are sampled as usual.
"""

from __future__ import annotations

import optuna

SECTIONS = ("preprocess", "model")


def warm_start_trials(plan, storage) -> list[tuple[dict, str]]:
    """(params, label) per warm-start trial, in file order; raises ValueError naming a bad entry."""
    study_config = plan.study_file.study
    knobs = {knob.param_name: knob for knob in plan.preprocess_knobs + plan.model_knobs}
    trials = []
    for index, entry in enumerate(study_config.warm_start or ()):
        where = f"{plan.study_file.path}: study.warm_start[{index}]"
        if "study" in entry:
            trials += _from_study(entry["study"], entry.get("top", 1), knobs, storage, where)
            continue
        params = {}
        for section in SECTIONS:
            for name, value in (entry.get(section) or {}).items():
                param = f"{section}.{name}"
                if param not in knobs:
                    raise ValueError(f"{where}: {param} is not a knob of this study (its {section} section "
                                     f"has {', '.join(k.split('.', 1)[1] for k in knobs if k.startswith(section)) or 'none'})")
                knob = knobs[param]
                _check_value(knob, value, f"{where}: {param}")
                if knob.kind != "fixed":
                    params[param] = float(value) if knob.kind == "float" else value
        trials.append((params, f"warm_start[{index}]"))
    return trials


def _check_value(knob, value, where: str) -> None:
    if knob.kind == "fixed":
        if value != knob.value:
            raise ValueError(f"{where}={value!r}, but the study fixes it at {knob.value!r}")
    elif knob.kind == "choice":
        if value not in knob.choices:
            raise ValueError(f"{where}={value!r} is not one of the study's choices {list(knob.choices)}")
    else:
        number = int if knob.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, number) or not knob.low <= value <= knob.high:
            raise ValueError(f"{where}={value!r} is outside the study's range [{knob.low}, {knob.high}]")


def _from_study(name: str, top: int, knobs: dict, storage, where: str) -> list[tuple[dict, str]]:
    """The `top` best complete trials of study `name`, restricted to the knobs this study searches."""
    try:
        earlier = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ValueError(f"{where}: no study named {name!r} in this storage to warm-start from") from None
    complete = [t for t in earlier.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    maximize = earlier.direction == optuna.study.StudyDirection.MAXIMIZE
    complete.sort(key=lambda t: t.value, reverse=maximize)
    out = []
    for trial in complete[:top]:
        params = {}
        for param, value in trial.params.items():
            knob = knobs.get(param)
            if knob is None or knob.kind == "fixed":
                continue  # not searched here: this study's own value (or default) applies
            try:
                _check_value(knob, value, param)
            except ValueError:
                continue  # outside this study's space: sampled instead
            params[param] = value
        out.append((params, f"{name}#{trial.number}"))
    return out


def enqueue(study: optuna.Study, trials: list[tuple[dict, str]]) -> int:
    """Enqueue each warm-start trial once (a resumed study does not run them again); returns how many
    were new."""
    before = len(study.get_trials(deepcopy=False))
    for params, label in trials:
        study.enqueue_trial(params, user_attrs={"warm_start": label}, skip_if_exists=True)
    return len(study.get_trials(deepcopy=False)) - before
