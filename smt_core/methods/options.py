"""A method's options, declared once: type, default, bounds, allowed values and help, on its config dataclass.

The engine builds its configs from them, the API validates a job's ``method_options`` with the same configs
(a :class:`ConfigError` names the field), and ``GET /v1/methods`` lists them, so the three cannot disagree.
Torch-free: the API imports this module.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

OptionType = Literal["integer", "number", "boolean", "string"]
C = TypeVar("C", bound="MethodConfig")


class ConfigError(ValueError):
    """A bad option, budget or target set; ``field`` names it (an option's name, or ``budget``/``targets``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Option:
    """One option as ``GET /v1/methods`` shows it. ``default`` None means "computed by the method" (the help
    says how); an open end of a range is marked by the exclusive flags and said in the help."""

    name: str
    type: OptionType
    default: Any
    help: str
    minimum: int | float | None = None
    maximum: int | float | None = None
    enum: tuple[Any, ...] | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    bounded_by_max_steps: bool = False  # a count of training steps: the service also caps it at its max_steps

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "default": self.default, "minimum": self.minimum,
                "maximum": self.maximum, "enum": list(self.enum) if self.enum is not None else None,
                "help": self.help}

    def check(self, value: Any) -> Any:
        """The value as the config keeps it; ConfigError naming the option otherwise."""
        if value is None and self.default is None:
            return None
        if self.enum is not None and value not in self.enum:
            raise ConfigError(self.name, f"must be one of {', '.join(map(str, self.enum))}, got {_short(value)}")
        if self.type == "boolean":
            if not isinstance(value, bool):
                raise ConfigError(self.name, f"must be true or false, got {_short(value)}")
            return value
        if self.type == "string":
            if not isinstance(value, str):
                raise ConfigError(self.name, f"must be a string, got {_short(value)}")
            return value
        integer = self.type == "integer"
        ok = not isinstance(value, bool) and isinstance(value, int if integer else int | float)
        if not ok or (not integer and not math.isfinite(value)) or not self._in_range(value):
            kind = "an integer" if integer else "a number"
            raise ConfigError(self.name, f"must be {kind} {self.range_text()}, got {_short(value)}")
        return value if integer else float(value)

    def _in_range(self, v: int | float) -> bool:
        lo, hi = self.minimum, self.maximum
        if lo is not None and (v < lo or (self.exclusive_minimum and v == lo)):
            return False
        return hi is None or (v < hi or (not self.exclusive_maximum and v == hi))

    def range_text(self) -> str:
        lo, hi = self.minimum, self.maximum
        if hi is None:
            return f"{'>' if self.exclusive_minimum else '>='} {lo}" if lo is not None else ""
        left = "(" if self.exclusive_minimum else "["
        right = ")" if self.exclusive_maximum else "]"
        return f"in {left}{lo if lo is not None else '-inf'}, {hi:g}{right}"

    def parse(self, text: str) -> Any:
        """A command-line string (KEY=VALUE) as a typed value; ``check`` judges it afterwards."""
        if self.type == "string":
            return text
        low = text.lower()
        if low in ("none", "null"):
            return None
        if self.type == "boolean":
            return {"true": True, "false": False}.get(low, text)
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text


def option(type: OptionType, default: Any, help: str, **bounds: Any) -> Any:
    """A config dataclass field that is also an :class:`Option` (its name is the field's)."""
    return dataclasses.field(default=default, metadata={"option": dict(type=type, default=default, help=help,
                                                                       **bounds)})


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class MethodConfig:
    """Base of the option dataclasses: every field is an :func:`option`, checked when the config is made
    (so a config that exists is valid); unknown keys are refused; CLI strings are parsed by type."""

    def __post_init__(self) -> None:
        for opt in self.options():
            setattr(self, opt.name, opt.check(getattr(self, opt.name)))
        self.validate()

    def validate(self) -> None:
        """Checks across options (none so far); raise ConfigError naming the field."""

    @classmethod
    def options(cls) -> list[Option]:
        return [Option(name=f.name, **f.metadata["option"]) for f in dataclasses.fields(cls)]

    @classmethod
    def from_options(cls: type[C], options: dict[str, Any] | None, *, parse_strings: bool = True) -> C:
        """``parse_strings``: values from the command line arrive as strings; JSON bodies are typed already
        (the API passes False, so ``"64"`` is not an integer there)."""
        given = dict(options or {})
        known = {o.name: o for o in cls.options()}
        for key in given:
            if key not in known:
                raise ConfigError(key, f"unknown option (known: {', '.join(known) or 'none'})")
        if parse_strings:
            given = {k: known[k].parse(v) if isinstance(v, str) else v for k, v in given.items()}
        return cls(**given)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
