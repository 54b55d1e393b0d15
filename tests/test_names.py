"""camp.names: the one definition of "better" for every metric direction."""

from __future__ import annotations

import math

import optuna
import pytest

from camp import names


def test_better_follows_the_direction_in_any_spelling():
    assert names.better(0.8, 0.7, "maximize") and not names.better(0.7, 0.8, "maximize")
    assert names.better(0.3, 0.4, "minimize") and not names.better(0.4, 0.3, "minimize")
    assert names.better(0.8, 0.7, optuna.study.StudyDirection.MAXIMIZE)
    assert names.better(0.3, 0.4, optuna.study.StudyDirection.MINIMIZE)
    assert not names.better(0.5, 0.5, "maximize") and not names.better(0.5, 0.5, "minimize")  # a tie is not better
    assert names.better(0.1, None, "maximize") and names.better(0.1, math.nan, "minimize")
    assert names.gain_sign("maximize") == 1.0 and names.gain_sign(optuna.study.StudyDirection.MINIMIZE) == -1.0
    with pytest.raises(ValueError, match="direction must be maximize or minimize"):
        names.better(1.0, 0.0, "up")


def test_every_objective_has_a_direction():
    assert set(names.OBJECTIVES.values()) <= {"maximize", "minimize"}
    assert names.OBJECTIVES[names.VAL_LOSS] == "minimize"
