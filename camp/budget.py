"""What a trial is expected to cost, from the study's own complete trials: a worker starts no trial that
would end after `study.timeout` (`study.fit_in_timeout`), while a cheaper kind may still fit; nor one of a
model family that another family beats at a lower cost per trial, once it has had its share of the time
(`study.dominated_time_share`)."""

from __future__ import annotations

import datetime

import optuna

from camp.names import REFIT_OF, better, maximizing


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
    values = same or scaled or [t.user_attrs["seconds"] for t in complete]
    return _median(values) if values else None


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
    medians = [_median(seconds) for seconds in groups.values()]
    return min(medians) if medians else None


# a family is judged only after this many complete trials of its own and of the family that beats it
DOMINANCE_MIN_TRIALS = 2
# proposals of a dominated family set aside in a row by one worker before it lets one run anyway: a sampler
# that insists is exploring, and a worker must not spin on proposals it never starts
MAX_DOMINATED_SKIPS_IN_A_ROW = 20


def dominated_by(study: optuna.Study, family: str, direction: str, share: float) -> str | None:
    """Why a trial of `family` should not start now, or None. It should not when another family's best
    complete trial is better than this family's best while its median trial is cheaper (each with at least
    DOMINANCE_MIN_TRIALS complete trials), and this family's complete trials already hold `share` or more
    of the study's trial time: a family both worse and slower keeps only a bounded slice of the budget for
    exploration, as cost-frugal AutoML (FLAML's estimated cost for improvement) spends little on a learner
    that is behind and slow. On clothing-small at the benchmark's shrunk size a 6-epoch CNN took ~20-60 s
    and scored < 0.2 while a HOG trial took ~1.5 s and scored ~0.68 (BENCHMARKS.md, "Time to target")."""
    by_family: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "seconds" in t.user_attrs and REFIT_OF not in t.user_attrs and t.value is not None:
            by_family.setdefault(t.user_attrs.get("family"), []).append(t)
    own = by_family.get(family, [])
    if len(own) < DOMINANCE_MIN_TRIALS:
        return None
    total = sum(t.user_attrs["seconds"] for trials in by_family.values() for t in trials)
    spent = sum(t.user_attrs["seconds"] for t in own)
    if total <= 0 or spent / total < share:
        return None
    own_best, own_cost = _best_value(own, direction), _median([t.user_attrs["seconds"] for t in own])
    for other, trials in sorted(by_family.items(), key=lambda item: str(item[0])):
        if other == family or len(trials) < DOMINANCE_MIN_TRIALS:
            continue
        best, cost = _best_value(trials, direction), _median([t.user_attrs["seconds"] for t in trials])
        if better(best, own_best, direction) and cost < own_cost:
            return (f"{family} is behind {other} (best {own_best:.4f} against {best:.4f}) at a higher cost per "
                    f"trial ({own_cost:.0f} s against {cost:.0f} s) and has had {spent / total:.0%} of the trial "
                    f"time (study.dominated_time_share {share:g})")
    return None


def _best_value(trials, direction: str) -> float:
    return (max if maximizing(direction) else min)(t.value for t in trials)


def _median(values: list[float]) -> float:
    """The middle value (the upper middle of an even count): what every cost estimate here uses."""
    values = sorted(values)
    return values[len(values) // 2]
