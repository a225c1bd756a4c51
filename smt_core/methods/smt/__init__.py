"""SMT — Sparse Matrix Tuning (He et al., 2024): train only the weight blocks with the largest gradients."""

from smt_core.methods.smt.config import SPEC, SMTConfig
from smt_core.registry import lazy_engine, register

register(SPEC)
_ENGINE = {"SMTMethod": "smt_core.methods.smt.model"}


def __getattr__(name: str):
    return lazy_engine(__name__, _ENGINE, name)


__all__ = ["SPEC", "SMTConfig", "SMTMethod"]
