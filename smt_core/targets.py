"""Find the projections a run adapts: logical names (q, k, v, o, gate, up, down) → physical modules.

Architectures differ in naming and layout: LLaMA-style ``q_proj`` linears (K/V may be narrower under GQA),
BERT's ``query/key/value``, and GPT-2's fused ``c_attn`` — a ``Conv1D`` whose weight is stored (in, out)
and whose output columns hold Q, K and V side by side. A :class:`Site` describes one physical module and
the logical matrices ("parts") it holds, always in the (out, in) orientation of the logical weight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from smt_core.methods.spec import Geometry, Module

# (regex on the full module name, logical target or "qkv" for a fused Q/K/V module)
_PATTERNS: list[tuple[str, str]] = [
    # LLaMA, Mistral, Qwen2, Phi-3 (separate projections), Gemma, OLMo ...
    (r"self_attn\.q_proj$", "q"), (r"self_attn\.k_proj$", "k"), (r"self_attn\.v_proj$", "v"),
    (r"self_attn\.o_proj$", "o"), (r"mlp\.gate_proj$", "gate"), (r"mlp\.up_proj$", "up"),
    (r"mlp\.down_proj$", "down"),
    # BERT, RoBERTa, MiniLM
    (r"attention\.self\.query$", "q"), (r"attention\.self\.key$", "k"), (r"attention\.self\.value$", "v"),
    (r"attention\.output\.dense$", "o"), (r"intermediate\.dense$", "up"),
    (r"layer\.\d+\.output\.dense$", "down"),
    # GPT-2
    (r"attn\.c_attn$", "qkv"), (r"attn\.c_proj$", "o"), (r"mlp\.c_fc$", "up"), (r"mlp\.c_proj$", "down"),
]
_COMPILED = [(re.compile(p), t) for p, t in _PATTERNS]


@dataclass(frozen=True)
class Part:
    """One logical matrix inside a physical module: rows [row0, row0 + rows) of its (out, in) weight."""

    target: str
    row0: int
    rows: int


@dataclass
class Site:
    """One physical module that a method adapts."""

    name: str  # full module name, e.g. model.layers.3.self_attn.v_proj
    module: nn.Module
    layer: int  # transformer block index (-1 if none)
    transposed: bool  # weight stored (in, out): GPT-2 Conv1D
    out_features: int
    in_features: int
    parts: tuple[Part, ...]  # the targeted logical matrices it holds

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(p.target for p in self.parts)

    def weight_out_in(self) -> torch.Tensor:
        """The frozen weight in (out, in) orientation (a view, no copy)."""
        w = self.module.weight
        return w.t() if self.transposed else w


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _layer_index(name: str) -> int:
    m = re.search(r"\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def find_sites(model: nn.Module, targets: list[str] | tuple[str, ...]) -> list[Site]:
    """Every module holding one of ``targets``; raises ValueError naming what is missing."""
    wanted = set(targets)
    sites: list[Site] = []
    found: set[str] = set()
    for name, module in model.named_modules():
        for pattern, logical in _COMPILED:
            if not pattern.search(name):
                continue
            module = getattr(module, "base_layer", module)  # a PEFT layer: its frozen base (inference)
            if isinstance(module, nn.Linear):
                out_f, in_f, transposed = module.out_features, module.in_features, False
            elif _is_conv1d(module):
                in_f, out_f = module.weight.shape
                transposed = True
            else:
                break
            if logical == "qkv":
                third = out_f // 3
                parts = tuple(Part(t, i * third, third) for i, t in enumerate("qkv") if t in wanted)
            else:
                parts = (Part(logical, 0, out_f),) if logical in wanted else ()
            if parts:
                sites.append(Site(name, module, _layer_index(name), transposed, out_f, in_f, parts))
                found.update(p.target for p in parts)
            break
    missing = wanted - found
    if missing:
        raise ValueError(
            f"targets: the model has no projection for {','.join(sorted(missing))} "
            f"(supported layouts: LLaMA-style, BERT-style, GPT-2)"
        )
    return sites


def base_param_count(model: nn.Module, exclude_prefixes: tuple[str, ...] = ()) -> int:
    """Parameters of the base model, tied weights once, new heads (``exclude_prefixes``) left out."""
    seen: set[int] = set()
    total = 0
    for name, p in model.named_parameters(remove_duplicate=True):
        if any(name.startswith(pre) for pre in exclude_prefixes):
            continue
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel()
    return total


def geometry_of(sites: list[Site], base_params: int = 0) -> Geometry:
    """The sites as the methods' torch-free arithmetic sees them (smt_core.methods.spec)."""
    return Geometry(tuple(Module(s.name, s.in_features, s.out_features, tuple((p.target, p.rows) for p in s.parts))
                          for s in sites), base_params)
