"""Constraints on setting values, declared next to each default and checked once at the boundary.

Each field of a settings dataclass (:mod:`.schema`) carries a :class:`Rule` in its metadata (the
scikit-learn ``_parameter_constraints`` idea): :func:`setting` declares the default, the rule and
an example for the error message, and :func:`build` turns a plain mapping (a composed Hydra
config, a saved ``config.yaml``, keyword arguments of the Python API) into a typed, frozen
instance, reporting every problem at once, each naming its key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from pavi_parcel.exceptions import BadInputError, BadInputErrors

T = TypeVar("T")
MISSING_VALUE = "???"
"""What Hydra leaves in a mandatory key nobody set."""


class Rule:
    """A set of accepted values with a description for messages ("an integer >= 1")."""

    description = "a valid value"

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        """The stored form of an accepted value (lists become tuples, ints become floats ...)."""
        return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Integer(Rule):
    """Whole numbers in ``[low, high]``; ``exclude`` values are refused (``n_jobs != 0``)."""

    low: int | None = None
    high: int | None = None
    exclude: tuple[int, ...] = ()
    text: str | None = None

    @property
    def description(self) -> str:  # type: ignore[override]
        if self.text:
            return self.text
        if self.low is not None and self.high is not None:
            return f"an integer from {self.low} to {self.high}"
        return f"an integer >= {self.low}" if self.low is not None else "an integer"

    def accepts(self, value: Any) -> bool:
        return (_is_int(value) and (self.low is None or value >= self.low)
                and (self.high is None or value <= self.high) and value not in self.exclude)


@dataclass(frozen=True)
class Real(Rule):
    """Finite numbers above ``low`` (``low_open``: strictly) and below ``high`` (strictly)."""

    low: float | None = None
    low_open: bool = False
    high: float | None = None
    text: str | None = None

    @property
    def description(self) -> str:  # type: ignore[override]
        if self.text:
            return self.text
        if self.low is None:
            return "a number"
        return f"a number {'>' if self.low_open else '>='} {self.low:g}"

    def accepts(self, value: Any) -> bool:
        if not _is_real(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return above and (self.high is None or value < self.high)

    def convert(self, value: Any) -> Any:
        return float(value)


@dataclass(frozen=True)
class Options(Rule):
    """One of a fixed set of values (compared with their type: ``True`` is not ``1``)."""

    values: tuple[Any, ...]

    @property
    def description(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join("null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                                     for v in self.values)

    def accepts(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)


@dataclass(frozen=True)
class Text(Rule):
    """A string (matching ``pattern`` when given)."""

    pattern: str | None = None
    text: str = "a string"

    @property
    def description(self) -> str:  # type: ignore[override]
        return self.text

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and (self.pattern is None or re.fullmatch(self.pattern, value) is not None)


@dataclass(frozen=True)
class Boolean(Rule):
    description = "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class Folder(Rule):
    """A path (string or Path), stored as an absolute :class:`~pathlib.Path` with ``~`` expanded."""

    description = "a path"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (str, Path)) and str(value) not in ("", MISSING_VALUE)

    def convert(self, value: Any) -> Any:
        return Path(str(value)).expanduser().resolve()


@dataclass(frozen=True)
class Labels(Rule):
    """A list of labels (strings; numbers are read as their text), stored as a tuple."""

    description = "a list of labels"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) or _is_int(v) for v in value)

    def convert(self, value: Any) -> Any:
        return tuple(str(v) for v in value)


@dataclass(frozen=True)
class ListOf(Rule):
    """A list whose items each satisfy ``item``, stored as a tuple."""

    item: Rule
    text: str = ""

    @property
    def description(self) -> str:  # type: ignore[override]
        return self.text or f"a list of {self.item.description}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and all(self.item.accepts(v) for v in value)

    def convert(self, value: Any) -> Any:
        return tuple(self.item.convert(v) for v in value)


@dataclass(frozen=True)
class AnyOf(Rule):
    """Values accepted by any of ``rules`` (``auto or a number > 0``); the first that accepts converts."""

    rules: tuple[Rule, ...]
    text: str | None = None

    @property
    def description(self) -> str:  # type: ignore[override]
        return self.text or " or ".join(r.description for r in self.rules)

    def accepts(self, value: Any) -> bool:
        return any(r.accepts(value) for r in self.rules)

    def convert(self, value: Any) -> Any:
        return next(r.convert(value) for r in self.rules if r.accepts(value))


NONE = Options((None,))


def setting(default: Any, rule: Rule, example: str | None = None, doc: str = "") -> Any:
    """A dataclass field with its default, its rule and the example shown in a message's fix.

    Mutable defaults (dataclass instances) are wrapped in a factory.
    """
    meta = {"rule": rule, "example": example, "doc": doc}
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


def _example(f: dataclasses.Field) -> str:
    if f.metadata.get("example") is not None:
        return str(f.metadata["example"])
    default = f.default
    if default is None:
        return "null"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return "[" + ",".join(map(str, default)) + "]"
    return str(default)


def invalid(key: str, expected: str, got: Any, example: str) -> BadInputError:
    """The one message for a bad setting: what, expected, got, fix."""
    return BadInputError(f"Invalid {key}", expected, repr(got), f"set {key}={example}")


def unknown(key: str) -> BadInputError:
    return BadInputError(f"Unknown configuration key '{key}'", "a key from conf/ (model.n_networks, "
                         "fit.max_steps, ingest.fd_threshold ...; see conf/*/*.yaml)", repr(key),
                         "check the spelling of the override")


def _nested(f: dataclasses.Field, hints: dict[str, Any]) -> type | None:
    hint = hints.get(f.name)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def check_fields(instance: Any) -> None:
    """Check and convert every field of a settings instance in place (from ``__post_init__``).

    Leaf fields must satisfy their :class:`Rule` (and take its stored form); nested settings may
    be given as mappings, which are built; then the instance's own ``problems()`` (constraints
    between fields) run. Keys in messages carry the class's ``PREFIX`` (``"model."``).

    Raises
    ------
    BadInputErrors
        Every problem at once.
    """
    cls = type(instance)
    prefix = getattr(cls, "PREFIX", "")
    hints = typing.get_type_hints(cls)
    problems: list[BadInputError] = []
    for f in fields(cls):
        key, value = prefix + f.name, getattr(instance, f.name)
        sub = _nested(f, hints)
        if sub is not None:
            if isinstance(value, Mapping):
                built, inner = collect(sub, value)
                problems += inner
                object.__setattr__(instance, f.name, built)
            elif not isinstance(value, sub):
                problems.append(invalid(key, f"a group of settings ({key}.*)", value, "{...}"))
            continue
        rule: Rule = f.metadata["rule"]
        if isinstance(value, str) and value == MISSING_VALUE:
            problems.append(BadInputError(f"Missing setting {key}", f"a value for {key}", "none",
                                          f"set {key}={_example(f)}"))
        elif not rule.accepts(value):
            problems.append(invalid(key, rule.description, value, _example(f)))
        else:
            object.__setattr__(instance, f.name, rule.convert(value))
    if not problems:
        problems += instance.problems()
    if problems:
        raise BadInputErrors(problems)


def collect(cls: type[T], values: Mapping[str, Any] | None,
            ignore_unknown: bool = False) -> tuple[T | None, list[BadInputError]]:
    """Build ``cls`` from a plain mapping; every problem, each naming its dotted key.

    Parameters
    ----------
    cls : settings dataclass type
    values : mapping or None
        Field values; missing keys take their default, nested mappings build nested settings.
    ignore_unknown : bool
        Leave out keys the schema does not know (configs saved by other versions) instead of
        reporting them.

    Returns
    -------
    instance : cls or None
        None when some value is invalid.
    problems : list of BadInputError
    """
    values = dict(values or {})
    prefix = getattr(cls, "PREFIX", "")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    problems = [] if ignore_unknown else [unknown(prefix + k) for k in values if k not in known]
    given: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        sub = _nested(f, hints)
        if sub is not None and isinstance(values[f.name], Mapping):
            inner, inner_problems = collect(sub, values[f.name], ignore_unknown)
            problems += inner_problems
            if inner is not None:
                given[f.name] = inner
        else:
            given[f.name] = values[f.name]
    try:
        instance = cls(**given)
    except BadInputErrors as exc:
        return None, problems + exc.errors
    return (None, problems) if problems else (instance, [])


def build(cls: type[T], values: Mapping[str, Any] | None, ignore_unknown: bool = False) -> T:
    """As :func:`collect`, raising :class:`~pavi_parcel.exceptions.BadInputErrors` on any problem."""
    instance, problems = collect(cls, values, ignore_unknown)
    if problems:
        raise BadInputErrors(problems)
    return instance  # type: ignore[return-value]


def to_plain(settings: Any) -> Any:
    """Settings as plain Python data (dicts, lists, str paths): JSON and YAML ready."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return {f.name: to_plain(getattr(settings, f.name)) for f in fields(settings)}
    if isinstance(settings, (list, tuple)):
        return [to_plain(v) for v in settings]
    if isinstance(settings, Path):
        return str(settings)
    return settings


def keys(cls: type) -> list[str]:
    """Dotted keys of every leaf setting of ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        sub = _nested(f, hints)
        out += [f"{f.name}.{k}" for k in keys(sub)] if sub is not None else [f.name]
    return out


__all__ = ["AnyOf", "Boolean", "Folder", "Integer", "Labels", "ListOf", "NONE", "Options", "Real", "Rule", "Text",
           "build", "check_fields", "collect", "invalid", "keys", "setting", "to_plain", "unknown"]
