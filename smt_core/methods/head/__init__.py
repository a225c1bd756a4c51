"""Head only (a linear probe): train the new classification head and nothing else."""

from smt_core.methods.head.config import SPEC, HeadConfig
from smt_core.registry import lazy_engine, register

register(SPEC)
_ENGINE = {"HeadMethod": "smt_core.methods.head.model"}


def __getattr__(name: str):
    return lazy_engine(__name__, _ENGINE, name)


__all__ = ["SPEC", "HeadConfig", "HeadMethod"]
