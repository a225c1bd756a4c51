"""The method registry: the engine looks methods up by name and never branches on a method's name."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smt_core.base import Method

_METHODS: dict[str, type[Method]] = {}
_BUILTIN = ("smt", "snell", "lora", "full", "head")  # packages under smt_core.methods; lora also registers dora


def register_method(cls: type[Method]) -> type[Method]:
    """Called at the end of each method package's ``__init__``."""
    _METHODS[cls.name] = cls
    return cls


def _load_builtins() -> None:
    for pkg in _BUILTIN:
        try:
            importlib.import_module(f"smt_core.methods.{pkg}")
        except ModuleNotFoundError as exc:  # a method package not written yet must not break the others
            if exc.name != f"smt_core.methods.{pkg}":
                raise


def get_method(name: str) -> type[Method]:
    _load_builtins()
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"method: unknown {name!r}; expected one of {', '.join(available_methods())}") from None


def available_methods() -> list[str]:
    _load_builtins()
    return sorted(_METHODS)
