"""Full fine-tuning's engine: every base weight trains (the reference point for memory and accuracy)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
        # by name, not by _weights' requires_grad test: a model loaded for inference has every flag still set
        self.params = {n: p for n, p in model.named_parameters() if n in tensors}
        return model

    def merge(self, model, sites, tensors, info) -> None:
        named = dict(model.named_parameters())
        missing = [k for k in tensors if k not in named]
        if missing:
            raise ValueError(f"adapter: weights {missing[:3]} do not exist in this model")
        with torch.no_grad():
            for k, v in tensors.items():
                named[k].copy_(v.to(named[k].dtype))

    @contextmanager
    def disabled(self, model: nn.Module) -> Iterator[None]:
        """Full fine-tuning has no adapter beside the weights: inside the block the trained weights give way
        to the base's own, read again from the folder the model was loaded from (``name_or_path``). Why a
        re-read: keeping the base weights in memory for the model's whole life would double it; this costs
        a second copy only while the block lasts."""
        base = _base_weights(model, self.params)
        trained = {n: p.data for n, p in self.params.items()}
        try:
            for n, p in self.params.items():
                p.data = base[n]
            yield
        finally:
            for n, p in self.params.items():
                p.data = trained[n]


def _base_weights(model: nn.Module, names: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    """The base model's own values of ``names``, each on its parameter's device and in its dtype."""
    folder = getattr(model, "name_or_path", "")
    if not folder or not hasattr(type(model), "from_pretrained"):
        raise ValueError("full: this model does not say where its base weights are (no name_or_path); "
                         "load the base model itself for its outputs")
    try:
        fresh = type(model).from_pretrained(folder, config=model.config, dtype=model.dtype, use_safetensors=True)
    except OSError as exc:
        raise ValueError(f"full: cannot read the base weights from {folder}: {exc}") from exc
    own = dict(fresh.named_parameters())
    missing = [n for n in names if n not in own]
    if missing:
        raise ValueError(f"full: the base in {folder} has no weights {missing[:3]}")
    return {n: own[n].detach().to(device=p.device, dtype=p.dtype) for n, p in names.items()}
