"""Plugin options: ``KEY=VALUE`` pairs from a trusted operator, and the typed subset an API
client may set.

Two rules, two functions:

- :func:`parse_options` reads the operator's pairs (command line, config): any key, values as
  JSON where they parse (numbers, ``true``, ``null``), else strings. The operator may set
  anything a factory accepts: endpoints, keys, model paths, devices.
- :func:`client_options` reads what an HTTP client sent against a policy's declared
  :attr:`msagent.Policy.client_options`: only declared keys, each converted to its type and
  checked against its bounds. Everything else is refused with :class:`InvalidOption` naming the
  allowed keys, so a client never chooses an endpoint, a key, a file, a model or a device.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from msagent.errors import InvalidInput
from msagent.types import _tuple

MAX_CLIENT_TEXT = 4000  # characters of KEY=VALUE text a client may send
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class InvalidOption(InvalidInput):
    """An option a client may not set, or a value outside its declared type and bounds."""


@attrs.frozen
class Option:
    """One option an API client may set: its type (int, float, bool or str) and bounds.

    ``minimum``/``maximum`` bound numbers (inclusive); ``choices`` lists the allowed strings;
    ``optional`` accepts ``null``/``none`` as None.
    """

    type: type = attrs.field(validator=attrs.validators.in_((int, float, bool, str)))
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    optional: bool = False
    help: str = ""

    def convert(self, key: str, raw: Any) -> Any:
        """``raw`` (a string from a form, or a JSON value) as this option's type."""
        if self.optional and (raw is None or str(raw).strip().lower() in ("null", "none")):
            return None
        value = _as_type(self.type, key, raw)
        if self.choices and value not in self.choices:
            raise InvalidOption(f"option {key}={raw!r} must be one of {', '.join(self.choices)}")
        if self.type in (int, float) and not self._in_bounds(value):
            raise InvalidOption(f"option {key}={raw!r} must lie in {self.describe()}")
        return value

    def _in_bounds(self, value: float) -> bool:
        return ((self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum))

    def describe(self) -> str:
        """The type and bounds in words, e.g. ``float in [0, 1]``."""
        if self.choices:
            return "one of " + "|".join(self.choices)
        low = "-inf" if self.minimum is None else f"{self.minimum:g}"
        high = "inf" if self.maximum is None else f"{self.maximum:g}"
        text = self.type.__name__ + (f" in [{low}, {high}]" if self.type in (int, float) else "")
        return text + (" or null" if self.optional else "")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type.__name__, "minimum": self.minimum, "maximum": self.maximum,
                "choices": list(self.choices) or None, "optional": self.optional, "help": self.help}


def _as_type(kind: type, key: str, raw: Any) -> Any:
    text = str(raw).strip()
    if len(text) > 200:
        raise InvalidOption(f"option {key} is {len(text)} characters long; at most 200")
    if kind is bool:
        if isinstance(raw, bool) or text.lower() in _TRUE + _FALSE:
            return raw if isinstance(raw, bool) else text.lower() in _TRUE
        raise InvalidOption(f"option {key}={raw!r} must be true or false")
    if kind is str:
        return text
    try:
        value = int(text) if kind is int else float(text)
    except (ValueError, OverflowError):
        raise InvalidOption(f"option {key}={raw!r} must be a {kind.__name__}") from None
    if kind is float and not math.isfinite(value):
        raise InvalidOption(f"option {key}={raw!r} must be a finite number")
    return value


def parse_options(pairs: Iterable[str]) -> dict[str, Any]:
    """The operator's ``KEY=VALUE`` pairs; values are parsed as JSON when they can be."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"option {pair!r} must look like KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except (json.JSONDecodeError, RecursionError, ValueError):
            options[key] = value
    return options


def split_pairs(text: str) -> dict[str, str]:
    """``KEY=VALUE`` pairs separated by spaces or new lines, values kept as strings."""
    if len(text) > MAX_CLIENT_TEXT:
        raise InvalidOption(f"options are {len(text)} characters long; at most {MAX_CLIENT_TEXT}")
    pairs: dict[str, str] = {}
    for pair in text.split():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidOption(f"option {pair[:80]!r} must look like KEY=VALUE")
        if key in pairs:
            raise InvalidOption(f"option {key!r} is given twice")
        pairs[key] = value
    return pairs


def client_options(name: str, declared: Mapping[str, Option], given: Mapping[str, Any]) -> dict:
    """``given`` (from an API client) checked against what plugin ``name`` declares.

    :raises InvalidOption: for an undeclared key (the message lists the allowed ones) or a
        value of the wrong type or out of bounds.
    """
    unknown = sorted(set(given) - set(declared))
    if unknown:
        allowed = ", ".join(f"{k} ({o.describe()})" for k, o in sorted(declared.items())) or "none"
        raise InvalidOption(
            f"{name!r} does not let API clients set {', '.join(map(repr, unknown))[:300]}; "
            f"allowed: {allowed}. Endpoints, keys, models, paths and devices are the server "
            "operator's to set (msagent serve --policy-option NAME:KEY=VALUE)")
    return {key: declared[key].convert(key, value) for key, value in given.items()}
