"""What a trial is expected to cost, from the study's own complete trials: a worker starts no trial that
would end after `study.timeout` (`study.fit_in_timeout`), while a cheaper kind may still fit."""

from __future__ import annotations

import optuna


def expected_seconds(study: optuna.Study, config) -> float | None:
    """Median duration of the study's complete trials like this one (same family and input size, else same
    family); None before there is one."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if "seconds" in t.user_attrs and t.user_attrs.get("family") == config.model.family]
    alike = [t for t in complete if t.user_attrs.get("size") == config.preprocess.size] or complete
    if not alike:
        return None
    seconds = sorted(t.user_attrs["seconds"] for t in alike)
    return seconds[len(seconds) // 2]


MAX_SKIPS_IN_A_ROW = 5


def cheapest_seconds(study: optuna.Study) -> float | None:
    """The shortest median duration over the kinds of complete trials (family, input size) seen so far."""
    groups: dict[tuple, list[float]] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "seconds" in t.user_attrs:
            groups.setdefault((t.user_attrs.get("family"), t.user_attrs.get("size")), []).append(t.user_attrs["seconds"])
    medians = [sorted(seconds)[len(seconds) // 2] for seconds in groups.values()]
    return min(medians) if medians else None
