"""What a trial is expected to cost, from the study's own complete trials: a worker starts no trial that
would end after `study.timeout` (`study.fit_in_timeout`), while a cheaper kind may still fit."""

from __future__ import annotations

import datetime

import optuna

from camp.names import REFIT_OF


def expected_seconds(study: optuna.Study, config, current: int | None = None) -> float | None:
    """What a trial like this one is expected to take: the median of the study's complete trials of its
    family and input size; without one, those of its family scaled by the pixel count (a CNN's cost grows
    with it); and never less than a running trial of its kind has already taken. None before any."""
    family, size = config.model.family, config.preprocess.size
    trials = study.get_trials(deepcopy=False)
    estimate = _median_seconds(trials, family, size)
    now = _now()
    running = [(now - t.datetime_start).total_seconds() for t in trials
               if t.state == optuna.trial.TrialState.RUNNING and t.datetime_start is not None
               and t.user_attrs.get("family") == family and t.user_attrs.get("size") == size
               and "skipped" not in t.user_attrs and t.number != current]
    if running and (estimate is None or max(running) > estimate):
        return max(running)  # a trial of this kind is still running after longer than the estimate
    return estimate


def _median_seconds(trials, family, size) -> float | None:
    """The median duration of complete trials of this family and size, else of the family scaled by pixels."""
    # finalists (camp.refit) train longer than the search's trials: they say nothing of what a trial costs
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and "seconds" in t.user_attrs
                and t.user_attrs.get("family") == family and REFIT_OF not in t.user_attrs]
    same = [t.user_attrs["seconds"] for t in complete if t.user_attrs.get("size") == size]
    scaled = [t.user_attrs["seconds"] * (size / t.user_attrs["size"]) ** 2 for t in complete
              if t.user_attrs.get("size") and size]
    values = sorted(same or scaled or [t.user_attrs["seconds"] for t in complete])
    return values[len(values) // 2] if values else None


def running_seconds_left(study: optuna.Study) -> float | None:
    """How much longer the trials still running are expected to take: the most, over them, of what a trial
    of its kind takes less what it has taken (0 when none runs). None while one of them is of a kind no
    complete trial has shown yet: its cost is not known."""
    trials = study.get_trials(deepcopy=False)
    now, left = _now(), 0.0
    for t in trials:
        if t.state != optuna.trial.TrialState.RUNNING or t.datetime_start is None or "skipped" in t.user_attrs:
            continue
        estimate = _median_seconds(trials, t.user_attrs.get("family"), t.user_attrs.get("size"))
        if estimate is None:
            return None
        left = max(left, estimate - (now - t.datetime_start).total_seconds())
    return left


def _now() -> datetime.datetime:
    return datetime.datetime.now()  # naive local time, as Optuna stores datetime_start


MAX_SKIPS_IN_A_ROW = 5


def cheapest_seconds(study: optuna.Study) -> float | None:
    """The shortest median duration over the kinds of complete trials (family, input size) seen so far."""
    groups: dict[tuple, list[float]] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "seconds" in t.user_attrs and REFIT_OF not in t.user_attrs:
            groups.setdefault((t.user_attrs.get("family"), t.user_attrs.get("size")), []).append(t.user_attrs["seconds"])
    medians = [sorted(seconds)[len(seconds) // 2] for seconds in groups.values()]
    return min(medians) if medians else None
