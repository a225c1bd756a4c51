"""LoRA and DoRA from HuggingFace PEFT, behind the registry's interface — wrapped, not rewritten.

The same budget and targets as every method (METHODS.md §3); the rank arithmetic is the spec's
(``config.py``): LoRA rank = floor(budget / Σ(in + out)); DoRA also trains a magnitude per output row, so
rank = floor((budget − Σout) / Σ(in + out)).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn

from smt_core.base import Method, PrepareContext
from smt_core.methods.lora.config import DORA_SPEC, SPEC, LoraOptions
from smt_core.serving import PeftAdapter, ServedAdapter
from smt_core.targets import Site, geometry_of


class LoraMethod(Method):
    """PEFT LoRA. Default lr 1e-3 with alpha = 2·rank: on MiniLM / SST-2 (38 steps, budget 1%) it reached
    0.676 held-out accuracy against 0.537 at 2e-4 — short runs need the higher rate."""

    spec = SPEC

    def __init__(self, config: LoraOptions) -> None:
        super().__init__(config)
        self.config: LoraOptions = config
        self.rank = 0
        self.target_names: list[str] = []
        self.dense_entries = 0

    def _peft_config(self) -> LoraConfig:
        alpha = self.config.alpha if self.config.alpha is not None else 2 * self.rank
        return LoraConfig(r=self.rank, lora_alpha=alpha, lora_dropout=self.config.dropout,
                          target_modules=self.target_names, use_dora=self.spec.magnitude, bias="none")

    def _wrap(self, model: nn.Module, sites: list[Site]) -> nn.Module:
        self.spec.check_targets(geometry_of(sites))
        self.target_names = [s.name for s in sites]
        self.dense_entries = sum(s.in_features * s.out_features for s in sites)  # LoRA's ΔW is dense
        head = [p for p in model.parameters() if p.requires_grad]
        peft_model = get_peft_model(model, self._peft_config())
        for p in head:  # PEFT freezes everything it does not own; the new head keeps training
            p.requires_grad_(True)
        return peft_model

    def prepare(self, ctx: PrepareContext) -> nn.Module:
        self.rank = self.plan(ctx.sites, ctx.budget).rank
        return self._wrap(ctx.model, ctx.sites)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for n, p in model.named_parameters() if "lora_" in n]

    def adapter_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        state = get_peft_model_state_dict(model)
        return {k: v for k, v in state.items() if "lora_" in k}

    def adapter_info(self) -> dict[str, Any]:
        cfg = self._peft_config()
        return {"rank": self.rank, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                "use_dora": self.spec.magnitude, "target_modules": self.target_names}

    def load(self, model, sites, tensors, info) -> nn.Module:
        self.rank = int(info["rank"])
        self.config.alpha = info.get("alpha", self.config.alpha)
        peft_model = self._wrap(model, sites)
        result = set_peft_model_state_dict(peft_model, tensors)
        bad = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if bad:
            raise ValueError(f"adapter: tensors {bad[:3]} do not fit this model")
        return peft_model

    def merge(self, model, sites, tensors, info) -> None:
        peft_model = self.load(model, sites, tensors, info)
        peft_model.merge_and_unload()  # writes W0 + BA (or DoRA's rescaled weight) into the base modules

    def served_adapter(self, name, sites, tensors, info, targets) -> ServedAdapter:
        """A named PEFT adapter on the shared base (PEFT batches one adapter at a time, DoRA included)."""
        self.rank = int(info["rank"])
        self.config.alpha = info.get("alpha", self.config.alpha)
        self.target_names = [s.name for s in sites]
        return PeftAdapter(name, self._peft_config(), tensors)

    def disabled(self, model: nn.Module) -> AbstractContextManager[None]:
        """PEFT's own switch: its layers run the base layer alone inside the block."""
        return model.disable_adapter()

    def report(self, model: nn.Module) -> dict[str, Any]:
        n = sum(p.numel() for p in self.trainable_parameters(model))
        return {"trainable_params": n, "delta_nonzeros": self.dense_entries, "rank": self.rank}


class DoraMethod(LoraMethod):
    """PEFT DoRA (``LoraConfig(use_dora=True)``): LoRA's direction plus a trained magnitude per row."""

    spec = DORA_SPEC
