"""Full fine-tuning's engine: every base weight trains (the reference point for memory and accuracy)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smt_core.base import Method, PrepareContext
from smt_core.methods.full.config import SPEC, FullConfig


def _weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every base parameter once (tied weights once), by name; a new head is left to the trainer."""
    seen: set[int] = set()
    out: dict[str, nn.Parameter] = {}
    for name, p in model.named_parameters():
        if p.requires_grad or p.data_ptr() in seen:  # already trainable = the new head
            continue
        seen.add(p.data_ptr())
        out[name] = p
    return out


class FullMethod(Method):
    """Default lr 5e-5: the usual range for full fine-tuning of models of this size (2e-5 … 1e-4); 2e-5
    reached 0.629 on MiniLM / SST-2 in 38 steps, a short run that wants the upper half of the range."""

    spec = SPEC
    default_learning_rate = 5e-5
    large_model_learning_rate = 2e-5  # Stanford Alpaca's full fine-tuning of LLaMA-7B

    def __init__(self, config: FullConfig) -> None:
        super().__init__(config)
        self.params: dict[str, nn.Parameter] = {}

    def prepare(self, ctx: PrepareContext) -> nn.Module:
        self.params = _weights(ctx.model)
        return ctx.model

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(self.params.values())

    def adapter_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.params.items()}

    def adapter_info(self) -> dict[str, Any]:
        return {"tensors": len(self.params)}

    def load(self, model, sites, tensors, info) -> nn.Module:
        self.merge(model, sites, tensors, info)
        self.params = {n: p for n, p in _weights(model).items() if n in tensors}
        return model

    def merge(self, model, sites, tensors, info) -> None:
        named = dict(model.named_parameters())
        missing = [k for k in tensors if k not in named]
        if missing:
            raise ValueError(f"adapter: weights {missing[:3]} do not exist in this model")
        with torch.no_grad():
            for k, v in tensors.items():
                named[k].copy_(v.to(named[k].dtype))

