"""Search spaces: each knob in a study file's `preprocess` / `model` section is a fixed value or a range.

    threshold_block: {int: [3, 31], step: 2}             # odd values only
    learning_rate: {float: [1.0e-4, 3.0e-3], log: true}
    mode: {choice: [binary, gray, color]}
    focal_gamma: {float: [0.5, 3.0], when: {loss_weighting: focal}}
    threshold_c: {float: [0, 8], when: [{mode: binary}, {crop_method: recipe}]}   # a list = any of

A knob whose `when` does not hold takes its default (or its `else:` value) and is not sampled.
Every value a range can produce is checked against the config class before any trial runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from camp.typed_yaml import build_dataclass

SPEC_KEYS = {"int", "float", "choice", "step", "log", "when", "else"}


@dataclasses.dataclass(frozen=True)
class Knob:
    """One knob: fixed (`value`) or searched (`kind` int/float/choice), optionally conditional."""

    section: str
    name: str
    kind: str  # fixed | int | float | choice
    value: Any = None
    low: Any = None
    high: Any = None
    step: Any = None
    log: bool = False
    choices: tuple = ()
    when: tuple = ()  # tuple of dicts (any of), each {knob: allowed values tuple} (all of)
    otherwise: Any = None

    @property
    def param_name(self) -> str:
        return f"{self.section}.{self.name}"

    def candidates(self) -> list:
        """Every value this knob can take (ranges: endpoints and, for small int ranges, every step)."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            step = self.step or 1
            values = list(range(self.low, self.high + 1, step))
            return values if len(values) <= 200 else [values[0], values[-1]]
        return [self.low, self.high]


def parse_space(section: str, raw: dict, config_class: type, where: str) -> list[Knob]:
    """Parse one knob section against its config class; errors name `where: section.knob`."""
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    unknown = sorted(set(raw) - set(fields), key=str)  # YAML keys may be ints or bools
    if unknown:
        raise ValueError(f"{where}: unknown {section} knob(s) {', '.join(map(str, unknown))}; known: {', '.join(fields)}")
    knobs = [_parse_knob(section, name, spec, f"{where}: {section}.{name}") for name, spec in raw.items()]
    for knob in knobs:
        for clause in knob.when:
            for other in clause:
                if other not in fields:
                    raise ValueError(f"{where}: {section}.{knob.name}.when names unknown knob {other!r}")
    _check_when_values(section, knobs, config_class, where)
    _check_values(section, knobs, config_class, where)
    by_name = {knob.name: knob for knob in knobs}
    if "min_epochs" in by_name and "max_epochs" in by_name:  # both given: the default min_epochs is clamped
        least, most = min(by_name["max_epochs"].candidates()), max(by_name["min_epochs"].candidates())
        if most > least:
            raise ValueError(f"{where}: {section}.min_epochs (up to {most}) must be <= {section}.max_epochs "
                             f"(from {least})")
    return knobs


def _check_when_values(section: str, knobs: list[Knob], config_class: type, where: str) -> None:
    """A `when:` value that is not a valid value of its knob at all (`loss_weighting: focall`) can never hold,
    and would silently switch the knob off: refused, naming it."""
    for knob in knobs:
        for clause in knob.when:
            for other, allowed in clause.items():
                for value in allowed:
                    try:
                        build_dataclass(config_class, {other: value}, f"{section}")
                    except ValueError as error:
                        reason = str(error).split(": ", 1)[-1]
                        raise ValueError(f"{where}: {section}.{knob.name}.when: {other} can never be {value!r} "
                                         f"({reason})") from None


def _parse_knob(section: str, name: str, spec: Any, where: str) -> Knob:
    if not isinstance(spec, dict):
        return Knob(section, name, "fixed", value=spec)
    unknown = sorted(set(spec) - SPEC_KEYS, key=str)
    if unknown:
        raise ValueError(f"{where}: unknown range key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    kinds = [kind for kind in ("int", "float", "choice") if kind in spec]
    if len(kinds) != 1:
        raise ValueError(f"{where}: give exactly one of int: [low, high], float: [low, high] or choice: [...]")
    kind = kinds[0]
    when = _parse_when(spec.get("when"), where)
    otherwise = spec.get("else")
    if kind == "choice":
        choices = spec["choice"]
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where}: choice must be a non-empty list")
        return Knob(section, name, "choice", choices=tuple(choices), when=when, otherwise=otherwise)
    bounds = spec[kind]
    if not (isinstance(bounds, list) and len(bounds) == 2):
        raise ValueError(f"{where}: {kind} must be [low, high], got {bounds!r}")
    low, high = bounds
    number = int if kind == "int" else (int, float)
    if not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds):
        raise ValueError(f"{where}: {kind} bounds must be {'integers' if kind == 'int' else 'numbers'}, got {bounds!r}")
    if low > high:
        raise ValueError(f"{where}: empty range: low {low} > high {high}")
    step, log = spec.get("step"), spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}: log must be true or false, got {type(log).__name__} {log!r}")
    if step is not None and (not isinstance(step, (int, float)) or step <= 0 or (kind == "int" and not isinstance(step, int))):
        raise ValueError(f"{where}: step must be a positive {'integer' if kind == 'int' else 'number'}, got {step!r}")
    if log and (low <= 0 or step not in ((None, 1) if kind == "int" else (None,))):  # Optuna: no step with log floats
        raise ValueError(f"{where}: log ranges need low > 0 and no step")
    if kind == "int" and step and (high - low) % step:
        raise ValueError(f"{where}: high - low ({high - low}) must be a multiple of step {step}")
    if kind == "float":
        low, high = float(low), float(high)
    return Knob(section, name, kind, low=low, high=high, step=step, log=log, when=when, otherwise=otherwise)


def _parse_when(when: Any, where: str) -> tuple:
    if when is None:
        return ()
    clauses = when if isinstance(when, list) else [when]
    if not clauses:
        raise ValueError(f"{where}: when must be a mapping {{knob: value(s)}} or a list of them, got an empty list")
    parsed = []
    for clause in clauses:
        if not isinstance(clause, dict) or not clause:
            raise ValueError(f"{where}: when must be a mapping {{knob: value(s)}} or a list of them")
        parsed.append({key: tuple(v if isinstance(v, list) else [v]) for key, v in clause.items()})
    return tuple(parsed)


def _check_values(section: str, knobs: list[Knob], config_class: type, where: str) -> None:
    """Each value a knob can take must build a valid config with the others at their fixed/lowest/highest."""
    base = {knob.name: knob.candidates()[0] for knob in knobs}
    for knob in knobs:
        values = _all_values(knob) + ([knob.otherwise] if knob.otherwise is not None else [])
        for value in values:
            _try(config_class, {**base, knob.name: value}, f"{where}: {section}.{knob.name}={value!r}")
    for pick in (0, -1):  # all knobs at their low ends, then all at their high ends
        _try(config_class, {knob.name: _extreme(knob, pick) for knob in knobs}, f"{where}: {section} (all knobs at their {'low' if pick == 0 else 'high'} ends)")


def _all_values(knob: Knob) -> list:
    """The values checked for validity: every value of an int range (up to 20,000 of them; beyond, both
    ends and the 100 values after the low end and before the high end), the candidates otherwise."""
    if knob.kind != "int":
        return knob.candidates()
    values = range(knob.low, knob.high + 1, knob.step or 1)
    return list(values) if len(values) <= 20_000 else list(values[:100]) + list(values[-100:])


def _extreme(knob: Knob, pick: int):
    """A numeric knob's smallest (pick 0) or largest (-1) value, its `else` included, wherever it is
    listed (a choice need not be sorted); other knobs' first or last candidate."""
    values = knob.candidates() + ([knob.otherwise] if knob.otherwise is not None else [])
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return (min if pick == 0 else max)(values)
    return knob.candidates()[pick]


def _try(config_class: type, values: dict, where: str) -> None:

    try:
        build_dataclass(config_class, values, where)
    except ValueError as error:
        message = str(error)
        raise ValueError(message if message.startswith(where) else f"{where}: {message}") from None


def is_active(knob: Knob, chosen: dict) -> bool:
    if not knob.when:
        return True
    return any(all(chosen.get(key) in allowed for key, allowed in clause.items()) for clause in knob.when)


def resolve(knobs: list[Knob], suggest=None, defaults: dict | None = None) -> dict:
    """Knob values: fixed ones as given, searched ones from `suggest(knob)`; inactive ones skipped.

    Unconditional knobs are resolved first, then conditional ones in file order, so a `when` sees
    the values chosen for the knobs it names (or their config defaults, from `defaults`).
    """
    chosen: dict = dict(defaults or {})
    values: dict = {}
    for knob in [k for k in knobs if not k.when] + [k for k in knobs if k.when]:
        if not is_active(knob, chosen):
            if knob.otherwise is not None:
                values[knob.name] = chosen[knob.name] = knob.otherwise
            continue
        if knob.kind == "fixed":
            value = knob.value
        elif suggest is None:
            raise ValueError(f"{knob.param_name} is a search range; `camp train` needs fixed values (use `camp sweep`)")
        else:
            value = suggest(knob)
        values[knob.name] = chosen[knob.name] = value
    return values


def suggest_with(trial):
    """A `suggest` for `resolve` that asks an Optuna trial, naming params `section.knob`."""

    def suggest(knob: Knob):
        if knob.kind == "int":
            return trial.suggest_int(knob.param_name, knob.low, knob.high, step=knob.step or 1, log=knob.log)
        if knob.kind == "float":
            return trial.suggest_float(knob.param_name, knob.low, knob.high, step=knob.step, log=knob.log)
        return trial.suggest_categorical(knob.param_name, list(knob.choices))

    return suggest
