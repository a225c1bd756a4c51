"""LoRA and DoRA baselines from HuggingFace PEFT."""

from smt_core.methods.lora.config import DORA_SPEC, SPEC, LoraOptions
from smt_core.registry import lazy_engine, register

register(SPEC)
register(DORA_SPEC)
_ENGINE = {"LoraMethod": "smt_core.methods.lora.model", "DoraMethod": "smt_core.methods.lora.model"}


def __getattr__(name: str):
    return lazy_engine(__name__, _ENGINE, name)


__all__ = ["DORA_SPEC", "SPEC", "DoraMethod", "LoraMethod", "LoraOptions"]
