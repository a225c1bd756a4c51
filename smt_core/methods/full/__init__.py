"""Full fine-tuning: every weight trains. The reference point for memory and accuracy."""

from smt_core.methods.full.config import SPEC, FullConfig
from smt_core.registry import lazy_engine, register

register(SPEC)
_ENGINE = {"FullMethod": "smt_core.methods.full.model"}


def __getattr__(name: str):
    return lazy_engine(__name__, _ENGINE, name)


__all__ = ["SPEC", "FullConfig", "FullMethod"]
