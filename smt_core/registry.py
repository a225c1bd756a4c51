"""The method registry: the one place a method is looked up by name.

PEFT's split: each method package registers a torch-free :class:`~smt_core.methods.spec.MethodSpec` (options,
budget arithmetic); its engine class is named by the spec and imported only when a run asks for it. The
engine, the estimate, the API's validation and ``GET /v1/methods`` all read the specs here, so importing this
module (and every spec) never imports torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from smt_core.methods.options import ConfigError

if TYPE_CHECKING:
    from smt_core.base import Method
    from smt_core.methods.spec import MethodSpec

_SPECS: dict[str, MethodSpec] = {}
_BUILTINS_LOADED = False


def register(spec: MethodSpec) -> MethodSpec:
    """Called by each method package's ``__init__``."""
    _SPECS[spec.name] = spec
    return spec


def _load_builtins() -> None:
    """Import every package under smt_core.methods (each registers its specs): a new method is its package.

    Once per process: listing the folder cost ~7 ms a lookup, and the API looks methods up several times for
    every job it creates (validation, two memory estimates)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    import smt_core.methods as methods

    for info in pkgutil.iter_modules(methods.__path__):
        if info.ispkg:
            importlib.import_module(f"smt_core.methods.{info.name}")
    _BUILTINS_LOADED = True


def specs() -> list[MethodSpec]:
    """Every registered method, in its spec's listing order."""
    _load_builtins()
    return sorted(_SPECS.values(), key=lambda s: (s.order, s.name))


def served_specs() -> list[MethodSpec]:
    """The methods the service offers: what job creation accepts and ``GET /v1/methods`` lists."""
    return [s for s in specs() if s.served]


def get_spec(name: str) -> MethodSpec:
    _load_builtins()
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise ConfigError("method", f"unknown {name!r}; expected one of {', '.join(available_methods())}") from None


def get_method(name: str) -> type[Method]:
    """The engine class of ``name`` (imports torch)."""
    module, _, attr = get_spec(name).engine.partition(":")
    return getattr(importlib.import_module(module), attr)


def available_methods() -> list[str]:
    _load_builtins()
    return sorted(_SPECS)


def lazy_engine(package: str, names: dict[str, str], name: str) -> Any:
    """A method package's ``__getattr__``: its engine classes (torch) load on first use, not on import."""
    if name not in names:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(names[name]), name)
