"""The SMT layer: a frozen linear plus trainable dense blocks, with a backward that only pays for blocks.

Forward:  y = x @ W0ᵀ + b + Σ_blocks x[..., cols] @ Δᵀ  → written into y[..., rows]
Backward: ∂x = ∂y @ W0 + Σ_blocks ∂y[..., rows] @ Δ      (no dense W0 + ΔW is ever built or kept)
          ∂Δ = ∂y[..., rows]ᵀ @ x[..., cols]              (only for the chosen blocks)

Only the input column slices the blocks need are saved, as copies (a view would keep the whole input
alive), and an input shared by several layers (Q, K and V read the same hidden states) is sliced once:
:class:`SliceCache` hands every layer the same copy. Blocks are kept apart from W0 (never added into it)
so tiny updates survive a bf16 frozen model; the values stay fp32.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from smt_core.base import WrappedLinear


class SliceCache:
    """Column-slice copies of live input tensors, keyed by the tensor's identity, dropped with it."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, dict[tuple[int, int], torch.Tensor]]] = {}

    def get(self, x: torch.Tensor, col0: int, width: int) -> torch.Tensor:
        key = id(x)
        entry = self._entries.get(key)
        if entry is None or entry[0]() is not x:
            entry = (weakref.ref(x, lambda _ref, k=key: self._entries.pop(k, None)), {})
            self._entries[key] = entry
        slices = entry[1]
        sl = slices.get((col0, width))
        if sl is None:
            sl = x[..., col0:col0 + width].contiguous()  # (..., width): a copy, not a view of x
            slices[(col0, width)] = sl
        return sl

    def clear(self) -> None:
        self._entries.clear()


class BlockSparseLinearFn(torch.autograd.Function):
    """y = x W0ᵀ + b + block deltas; gradients for the block values only (and for x)."""

    @staticmethod
    def forward(ctx, x, weight, bias, values, blocks, offsets, cache):  # noqa: D401
        # x: (..., in)  weight: (out, in) frozen  values: flat fp32  blocks: list[(r0, c0, h, w)]
        y = torch.nn.functional.linear(x, weight, bias)  # (..., out)
        col_slices = []
        for (r0, c0, h, w), off in zip(blocks, offsets, strict=True):
            delta = values[off:off + h * w].view(h, w).to(x.dtype)
            y[..., r0:r0 + h] += x[..., c0:c0 + w] @ delta.t()
            if ctx.needs_input_grad[3]:
                col_slices.append(cache.get(x, c0, w) if cache is not None else
                                  x[..., c0:c0 + w].contiguous())
        ctx.blocks, ctx.offsets = blocks, offsets
        ctx.save_for_backward(weight, values, *col_slices)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        weight, values, *col_slices = ctx.saved_tensors
        grad_x = grad_values = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ weight.to(grad_out.dtype)  # (..., in): the frozen part
            for (r0, c0, h, w), off in zip(ctx.blocks, ctx.offsets, strict=True):
                delta = values[off:off + h * w].view(h, w).to(grad_out.dtype)
                grad_x[..., c0:c0 + w] += grad_out[..., r0:r0 + h] @ delta  # the blocks' correction
        if ctx.needs_input_grad[3]:
            g2 = grad_out.reshape(-1, grad_out.shape[-1])  # (tokens, out)
            parts = []
            for (r0, _c0, h, w), xs in zip(ctx.blocks, col_slices, strict=True):
                xs2 = xs.reshape(-1, w)  # (tokens, w)
                parts.append((g2[:, r0:r0 + h].t().float() @ xs2.float()).reshape(-1))  # (h*w,)
            grad_values = torch.cat(parts)
        return grad_x, None, None, grad_values, None, None, None


class SMTLinear(WrappedLinear):
    """Wraps a frozen ``nn.Linear`` or GPT-2 ``Conv1D`` and trains only its chosen blocks.

    ``blocks`` rows are physical rows of the (out, in) weight (a fused Q/K/V part's offset included).
    """

    def __init__(self, base: nn.Module, transposed: bool, blocks: list[tuple[int, int, int, int]],
                 values: torch.Tensor | None = None, cache: SliceCache | None = None) -> None:
        super().__init__(base, transposed)
        self.block_list = [tuple(int(v) for v in b) for b in blocks]
        sizes = [h * w for _, _, h, w in self.block_list]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        n = sum(sizes)
        if values is None:
            values = torch.zeros(n, dtype=torch.float32, device=base.weight.device)
        assert values.numel() == n, f"values hold {values.numel()} entries, blocks need {n}"
        # a checkpoint's values arrive on the CPU: they live where the frozen weight does
        self.values = nn.Parameter(values.detach().to(device=base.weight.device, dtype=torch.float32).clone())
        self.cache = cache

    def block_deltas(self):
        """Yield (row0, col0, delta (h, w)) per block, physical coordinates."""
        for (r0, c0, h, w), off in zip(self.block_list, self.offsets, strict=True):
            yield r0, c0, self.values[off:off + h * w].view(h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.block_list:
            return self.base(x)
        cache = self.cache if torch.is_grad_enabled() else None
        fn = BlockSparseLinearFn
        return fn.apply(x, self.weight_out_in(), self.base.bias, self.values, self.block_list, self.offsets, cache)
