"""Injection of SNELL into a model, and the artifact hooks (tensors, manifest, load, merge, SHiRA export)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from smt_core.base import Method, PrepareContext, add_to_weight, replace_module
from smt_core.methods.snell import artifact
from smt_core.methods.snell.config import SPEC, SnellConfig
from smt_core.methods.snell.kernel import EPS, P, n_keep
from smt_core.methods.snell.layer import SnellLayer
from smt_core.targets import Site

COEFFICIENTS = (0.1, -0.1)  # the released code's fixed c; also the start when c is learned
INIT = "uniform(±1/sqrt(features·r/2)) per factor (the released kaiming_uniform(a=√5)), c = (+0.1, −0.1)"


class SnellMethod(Method):
    """SNELL (Shen et al., NeurIPS 2024): kernelized LoRA factors + per-forward competition sparsification.

    ``default_learning_rate`` = 5e-3, five times the released code's AdamW 1e-3 (its ViT runs last
    thousands of steps). Why: the factors start small (package docstring) and ΔWˢ is quadratic in ΔW
    (released rule) — AdamW moves each factor coordinate by ~lr a step, so at 1e-3 ΔWˢ reaches
    fine-tuning magnitudes only after a few hundred consistent steps. Measured on MiniLM-L6/SST-2 (600
    rows, 100 steps, batch 16, budget 1%): eval accuracy 0.570 at 1e-3, 0.702 at 5e-3, 0.750 at 1e-2
    (head alone: 0.551 at 1e-3, 0.570 at 5e-3). 5e-3 rather than 1e-2 leaves margin for causal LMs, whose
    rate was not swept here.
    """

    spec = SPEC
    sparse_delta = True

    def __init__(self, config: SnellConfig) -> None:
        super().__init__(config)
        self.config: SnellConfig = config
        self.rank: int | None = None
        self._modules: dict[str, dict[str, Any]] = {}

    # -- injection ---------------------------------------------------------------------------------
    def prepare(self, ctx: PrepareContext) -> nn.Module:
        rank = self.plan(ctx.sites, ctx.budget).rank  # r = 2·floor(budget / (2·Σ(in + part rows)))
        keep = {id(p) for p in ctx.head_parameters}
        for p in ctx.model.parameters():
            if id(p) not in keep:
                p.requires_grad_(False)
        self._inject(ctx.model, ctx.sites, rank)
        return ctx.model

    def _inject(self, model: nn.Module, sites: list[Site], rank: int) -> dict[str, SnellLayer]:
        cfg = self.config
        self.rank, self._modules, layers = rank, {}, {}
        for site in sites:
            layer = SnellLayer(site.module, site.name, site.in_features, site.out_features, site.parts, rank,
                               cfg.sparsity, cfg.rule, COEFFICIENTS, cfg.learn_coefficients, EPS)
            replace_module(model, site.name, layer)
            layers[site.name] = layer
            self._modules[site.name] = {"in": site.in_features, "out": site.out_features, "parts": [
                {"target": p.target, "row0": p.row0, "rows": p.rows, "s": cfg.sparsity,
                 "n_keep": n_keep(p.rows, site.in_features, cfg.sparsity)} for p in site.parts]}
        return layers

    @staticmethod
    def layers(model: nn.Module) -> list[SnellLayer]:
        return [m for m in model.modules() if isinstance(m, SnellLayer)]

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """A and B of every part, plus c when learned (decided by the option, not by requires_grad flags,
        which the trainer sets from this list)."""
        learn = self.config.learn_coefficients
        return [p for layer in self.layers(model) for part in layer.parts
                for p in (layer.snell_A[part.target], layer.snell_B[part.target])
                + ((layer.snell_c[part.target],) if learn else ())]

    def report(self, model: nn.Module) -> dict[str, Any]:
        nonzeros = sum(int(torch.count_nonzero(layer.materialise(p)))
                       for layer in self.layers(model) for p in layer.parts)
        return {"trainable_params": sum(p.numel() for p in self.trainable_parameters(model)),
                "delta_nonzeros": nonzeros}

    # -- artifact ------------------------------------------------------------------------------------
    def adapter_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Per part: the materialised ΔWˢ (bitmask or indices, fp32 values, sha256 — ``artifact``'s format,
        README "The SNELL artifact") and the factors (what a reload trains on from)."""
        out: dict[str, torch.Tensor] = {}
        for layer in self.layers(model):
            for part in layer.parts:
                key = f"{layer.site_name}.{part.target}.snell_"
                # (out, in) orientation of the part
                out.update({key + k: v for k, v in artifact.encode(layer.materialise(part)).items()})
                out[key + "A"] = layer.snell_A[part.target].detach().contiguous().cpu()
                out[key + "B"] = layer.snell_B[part.target].detach().contiguous().cpu()
                if self.config.learn_coefficients:
                    out[key + "coefficients"] = layer.snell_c[part.target].detach().contiguous().cpu()
        return out

    def adapter_info(self) -> dict[str, Any]:
        return {"rank": self.rank, "p": P, "coefficients": list(COEFFICIENTS),
                "learn_coefficients": self.config.learn_coefficients, "sparsity": self.config.sparsity,
                "rule": self.config.rule, "eps": EPS, "init": INIT, "modules": self._modules}

    def load(self, model: nn.Module, sites: list[Site], tensors: dict[str, torch.Tensor],
             info: dict[str, Any]) -> nn.Module:
        """Factors back into fresh wrappers; the recomputed ΔWˢ is checked against the stored one (a
        different device or dtype can flip entries at the threshold — METHODS.md §2)."""
        for site in sites:  # only the wrapped projections: a head's flags are the trainer's business
            site.module.requires_grad_(False)
        self.config = SnellConfig(sparsity=info.get("sparsity", self.config.sparsity),
                                  rule=info.get("rule", self.config.rule),
                                  learn_coefficients=info.get("learn_coefficients", False))
        rank = int(info["rank"]) if "rank" in info else _rank_from(tensors, sites)
        layers = self._inject(model, sites, rank)
        for name, layer in layers.items():
            layer.eps = float(info.get("eps", EPS))
            for part in layer.parts:
                key = f"{name}.{part.target}.snell_"
                with torch.no_grad():
                    layer.snell_A[part.target].copy_(tensors[key + "A"])
                    layer.snell_B[part.target].copy_(tensors[key + "B"])
                    coeffs = tensors.get(key + "coefficients", torch.tensor(info.get("coefficients",
                                                                                      COEFFICIENTS)))
                    layer.snell_c[part.target].copy_(coeffs)
                stored = artifact.dense(tensors, key, part.rows, layer.in_features).to(layer.weight.device)
                flipped = int((layer.materialise(part) != stored.to(torch.float32)).sum())
                if flipped:
                    warnings.warn(f"snell: {key[:-1]} recomputes {flipped} entries differently from the "
                                  f"saved ΔW (threshold ties or another device); merge uses the saved ΔW",
                                  stacklevel=2)
        return model

    def merge(self, model: nn.Module, sites: list[Site], tensors: dict[str, torch.Tensor],
              info: dict[str, Any]) -> None:
        """W0 + the stored materialised ΔWˢ: what the trained model computed, independent of recomputation."""
        for site in sites:
            for part in site.parts:
                key = f"{site.name}.{part.target}.snell_"
                delta = artifact.dense(tensors, key, part.rows, site.in_features)
                add_to_weight(site, part.row0, delta.to(site.weight_out_in().device))

    def sparse_deltas(self, model: nn.Module, sites: list[Site], tensors: dict[str, torch.Tensor],
                      info: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The stored ΔWˢ as entries (served in place, SHiRA export), from either stored layout; a part
        with a checksum is verified first (the decode is dense for that moment, one matrix at a time)."""
        out = {}
        for site in sites:
            idx, vals = [], []
            for part in site.parts:
                key = f"{site.name}.{part.target}.snell_"
                if key + "delta_sha256" in tensors:
                    artifact.dense(tensors, key, part.rows, site.in_features)
                i, v = artifact.entries(tensors, key, part.rows, site.in_features)
                idx.append(torch.stack([i[0] + part.row0, i[1]]))
                vals.append(v)
            out[site.name] = (torch.cat(idx, dim=1), torch.cat(vals))
        return out


def _rank_from(tensors: dict[str, torch.Tensor], sites: list[Site]) -> int:
    site, part = sites[0], sites[0].parts[0]
    return int(tensors[f"{site.name}.{part.target}.snell_A"].shape[1])
