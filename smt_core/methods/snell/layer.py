"""The module that replaces an adapted projection: base output + x @ ΔWˢᵀ on the targeted part rows.

For a plain ``nn.Linear`` or GPT-2 ``Conv1D`` base the whole output, base included, comes from one
:class:`~smt_core.methods.snell.kernel.SnellLinear` call (in fp32 one product each way on W0 + ΔWˢ; see the
kernel's docstring); any other base runs itself, and the delta is added to its output.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from smt_core.base import WrappedLinear
from smt_core.methods.snell.kernel import P, PartSpec, SnellLinear, make_plan, n_keep, sparse_delta
from smt_core.targets import Part


class SnellLayer(WrappedLinear):
    """Wraps one physical module (``nn.Linear`` or GPT-2 ``Conv1D``; the original stays in ``base``).

    Per targeted part (a logical matrix of ``rows`` output rows): factors A (in, r) and B (rows, r), fp32
    whatever the base dtype (tiny updates vanish in bf16), and coefficients c (P,) — a parameter when
    learned, a buffer otherwise. The delta is computed in the logical (out, in) orientation; the Conv1D's
    (in, out) storage is read through ``weight_out_in()`` (a view) by the fused forward, and written only by
    merge, through ``add_to_weight``.
    """

    def __init__(self, base: nn.Module, site_name: str, in_features: int, out_features: int,
                 parts: tuple[Part, ...], rank: int, sparsity: float, rule: str,
                 coefficients: tuple[float, ...], learn_coefficients: bool, eps: float) -> None:
        super().__init__(base)
        assert rank >= P and rank % P == 0, f"SNELL rank must be a positive multiple of {P}, got {rank}"
        self.site_name, self.in_features, self.out_features = site_name, in_features, out_features
        self.parts, self.rank, self.sparsity, self.rule, self.eps = parts, rank, sparsity, rule, eps
        device = base.weight.device
        self.snell_A = nn.ParameterDict()
        self.snell_B = nn.ParameterDict()
        self.snell_c = nn.ParameterDict()
        for part in parts:
            self.snell_A[part.target] = nn.Parameter(_init_factor(in_features, rank, device))
            self.snell_B[part.target] = nn.Parameter(_init_factor(part.rows, rank, device))
            c = torch.tensor(coefficients, dtype=torch.float32, device=device)
            self.snell_c[part.target] = nn.Parameter(c, requires_grad=learn_coefficients)

    def keep(self, part: Part) -> int:
        return n_keep(part.rows, self.in_features, self.sparsity)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.disabled:
            return self.base(x, *args, **kwargs)
        if args or kwargs or not self._fusable():
            return self.base(x, *args, **kwargs) + self.delta(x)
        return self._run(x, self.weight_out_in(), self.base.bias)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """x @ ΔWˢᵀ over the whole output width (zeros outside the targeted parts), (..., out)."""
        return self._run(x, None, None)

    def _run(self, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
        """SnellLinear over this layer's parts: with the frozen (out, in) weight the whole output, without
        it the delta term alone."""
        specs = tuple(PartSpec(p.row0, p.rows, self.keep(p)) for p in self.parts)
        tensors = [t for p in self.parts
                   for t in (self.snell_A[p.target], self.snell_B[p.target], self.snell_c[p.target])]
        plan = make_plan(specs, self.out_features, self.rule, self.eps, x, weight, tensors[0].dtype)
        return SnellLinear.apply(x, weight, bias, plan, *tensors)

    def _fusable(self) -> bool:
        """Whether SnellLinear may stand in for the base: exactly a Linear or a Conv1D (a subclass may
        quantise or hook its forward), frozen (SnellLinear gives the weight and bias no gradient), no hooks."""
        base = self.base
        plain = type(base) is nn.Linear or (self.transposed and type(base).__name__ == "Conv1D")
        frozen = not base.weight.requires_grad and (base.bias is None or not base.bias.requires_grad)
        return plain and frozen and not (base._forward_hooks or base._forward_pre_hooks)

    def materialise(self, part: Part) -> torch.Tensor:
        """ΔWˢ of one part, (rows, in), detached: exactly what the forward adds."""
        return sparse_delta(self.snell_A[part.target], self.snell_B[part.target], self.snell_c[part.target],
                            self.keep(part), self.rule, self.eps)


def _init_factor(features: int, rank: int, device: torch.device) -> torch.Tensor:
    """U(±1/sqrt(features·r/P)): the released code's kaiming_uniform_(a=√5) on its (P, features, r/P)
    tensors (fan_in = features·r/P). Why this small scale is the right LM initialisation: see the
    package docstring."""
    bound = 1.0 / math.sqrt(features * rank // P)
    return torch.empty(features, rank, device=device).uniform_(-bound, bound)
