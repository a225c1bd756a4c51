"""LoRA and DoRA baselines from HuggingFace PEFT."""

from smt_core.methods.lora.config import LoraOptions
from smt_core.methods.lora.model import DoraMethod, LoraMethod
from smt_core.registry import register_method

register_method(LoraMethod)
register_method(DoraMethod)

__all__ = ["DoraMethod", "LoraMethod", "LoraOptions"]
