"""Head only's engine: the new classification head trains, nothing else does."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smt_core.base import Method, PrepareContext
from smt_core.methods.head.config import SPEC


class HeadMethod(Method):
    """Default lr 2e-3 (the head rate every method uses): one linear layer on frozen features."""

    spec = SPEC

    def prepare(self, ctx: PrepareContext) -> nn.Module:
        if not ctx.head_parameters:
            raise ValueError("method: head trains only a new classification head; this data has none "
                             "(use classification data, or another method)")
        return ctx.model

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return []

    def adapter_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {}

    def adapter_info(self) -> dict[str, Any]:
        return {}

    def load(self, model, sites, tensors, info) -> nn.Module:
        return model

    def merge(self, model, sites, tensors, info) -> None:
        return None

