"""The one place spec constraints are checked.

Every spec parser receives a :class:`Problems` collector and records what is
wrong instead of raising, so a user sees every problem of every spec in one
:class:`~orchestrator.errors.SpecError`. Messages share one shape:
``<where>: expected <what>, got <value>. <how to fix / did you mean>``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.errors import SpecError, did_you_mean

_MISSING = object()




def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Problems:
    """Collects spec problems; :meth:`raise_if_any` raises them together."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.messages.append(f"{where}: {message}")

    def expected(self, where: str, what: str, got: object, hint: str = "") -> None:
        self.add(where, f"expected {what}, got {_show(got)}.{(' ' + hint) if hint else ''}")

    def __bool__(self) -> bool:
        return bool(self.messages)

    def raise_if_any(self) -> None:
        if self.messages:
            raise SpecError(self.messages)

    # ---- typed readers: each returns the value, or ``default`` after recording a problem

    def mapping(self, value: object, where: str) -> Mapping[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.expected(where, "a mapping (key: value pairs)", value)
            return None
        return value

    def unknown_keys(self, spec: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
        allowed = list(allowed)
        for key in spec:
            if key not in allowed:
                self.add(
                    where,
                    f"unknown key {key!r}{did_you_mean(key, allowed)}. "
                    f"Allowed keys: {', '.join(allowed)}.",
                )

    def choice(self, spec: Mapping[str, Any], key: str, options: Iterable[Any], where: str,
               default: Any = _MISSING) -> Any:
        options = list(options)
        value = spec.get(key, default)
        if value is _MISSING:
            self.add(where, f"missing required key {key!r}; choose one of {_join(options)}.")
            return None
        if value not in options:
            self.expected(f"{where}.{key}", f"one of {_join(options)}", value,
                          did_you_mean(value, [str(o) for o in options]).strip())
            return default if default is not _MISSING else None
        return value

    def string(self, spec: Mapping[str, Any], key: str, where: str, default: Any = _MISSING,
               ) -> str | None:
        value = spec.get(key, default)
        if value is _MISSING:
            self.add(where, f"missing required key {key!r} (a non-empty string).")
            return None
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.expected(f"{where}.{key}", "a non-empty string", value)
            return None
        return value

    def number(self, spec: Mapping[str, Any], key: str, where: str, *, default: Any = _MISSING,
               integer: bool = False, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> Any:
        value = spec.get(key, default)
        if value is _MISSING:
            self.add(where, f"missing required key {key!r}.")
            return None
        if value is None and default is None:
            return None
        kind = "an integer" if integer else "a number"
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or (isinstance(value, float) and not math.isfinite(value)):
            self.expected(f"{where}.{key}", kind + _range_text(low, high, low_open, high_open), value)
            return None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            self.expected(f"{where}.{key}", kind + _range_text(low, high, low_open, high_open), value)
            return None
        return value

    def boolean(self, spec: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        value = spec.get(key, default)
        if not isinstance(value, bool):
            self.expected(f"{where}.{key}", "true or false", value)
            return default
        return value

    def string_list(self, spec: Mapping[str, Any], key: str, where: str,
                    default: Any = _MISSING) -> tuple[str, ...] | None:
        value = spec.get(key, default)
        if value is _MISSING:
            self.add(where, f"missing required key {key!r} (a list of names).")
            return None
        if value is None and default is None:
            return None
        if isinstance(value, str):
            value = [value]
        if (not isinstance(value, (list, tuple)) or not value
                or not all(isinstance(v, str) and v for v in value)):
            self.expected(f"{where}.{key}", "a non-empty list of names", value)
            return None
        duplicates = sorted({v for v in value if list(value).count(v) > 1})
        if duplicates:
            self.add(f"{where}.{key}", f"names listed twice: {', '.join(duplicates)}.")
        return tuple(value)


def _join(options: Iterable[Any]) -> str:
    return ", ".join(repr(o) if not isinstance(o, str) else o for o in options)


def _range_text(low, high, low_open, high_open) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    return f" in {left}{low}, {high}{right}"


def raise_spec_error(where: str, message: str) -> None:
    """Raise a one-problem :class:`SpecError` (for checks made outside parsing)."""
    raise SpecError([f"{where}: {message}"])
