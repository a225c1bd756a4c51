"""The SMT layer: a frozen linear plus trainable dense blocks; gradients exist for the blocks alone.

Two implementations of the same function, chosen per module (``SMTLinear.impl``):

- ``fold`` (the default on GPU): W = W0 + blocks is built once per call in fp32 (one copy of the weight
  and one scatter of every block's values, a transient never saved), then one product each way:
  y = x Wᵀ + b and ∂x = ∂y W. The blocks' gradient is one dense product ∂yᵀ x followed by a gather of the
  chosen entries. The kernel count does not grow with the number of blocks, which is what a GPU pays for;
  the input x is saved whole (as LoRA saves it; Q, K and V share the same tensor).
- ``blocks`` (the default on CPU): the forward and the input gradient fold the same way, but the blocks'
  gradient is one small product per block, ∂Δ = ∂y[..., rows]ᵀ x[..., cols], and only the input column
  slices the blocks need are saved, as copies (a view would keep the whole input alive); an input shared by
  several layers is sliced once (:class:`SliceCache`). On a CPU the flops of a dense ∂yᵀ x would dominate,
  and where the blocks cover few columns the slices also take less memory than x.

Under bf16 autocast the folded weight is rounded to bf16 for the products, exactly as mixed-precision
masked full fine-tuning rounds its fp32 master weight; the block values themselves stay fp32 (they are
what the optimizer updates and what merge writes), so tiny updates accumulate and survive.
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


IMPLS = ("auto", "fold", "blocks")
DENSE_GRAD_MIN_COVERAGE = 0.25  # auto on GPU: below this share of covered input columns, save slices


def folded_weight(weight: torch.Tensor, values: torch.Tensor, flat_index: torch.Tensor) -> torch.Tensor:
    """W0 + the blocks as a new contiguous fp32 (out, in) matrix (the frozen weight is never written)."""
    w = weight.to(dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)
    w.view(-1).index_add_(0, flat_index, values.detach().float())
    return w


class FoldedBlockLinearFn(torch.autograd.Function):
    """y = x (W0 + blocks)ᵀ + b; ∂x with one product; ∂values by a dense ∂yᵀx gather or per block."""

    @staticmethod
    def forward(ctx, x, weight, bias, values, flat_index, blocks, offsets, cache, dense_grad):  # noqa: D401
        # x: (..., in)  weight: (out, in) frozen  values: flat fp32  flat_index: (n,) positions in W
        w = folded_weight(weight, values, flat_index)
        y = torch.nn.functional.linear(x, w, bias)  # under autocast: bf16(W0 + blocks), fp32 accumulation
        ctx.blocks, ctx.offsets, ctx.dense_grad = blocks, offsets, dense_grad
        ctx.flat_index = flat_index  # a buffer of the module, not an activation: kept off the saved tensors
        saved: list[torch.Tensor] = []
        if ctx.needs_input_grad[3]:
            if dense_grad:
                saved = [x]  # whole, not a copy: Q, K and V save the same storage
            else:
                slices = cache if cache is not None else SliceCache()  # blocks over the same columns: one copy
                saved = [slices.get(x, c0, w_) for (_r0, c0, _h, w_) in blocks]
        ctx.save_for_backward(weight, values, *saved)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        weight, values, *saved = ctx.saved_tensors
        flat_index = ctx.flat_index
        grad_x = grad_values = None
        if ctx.needs_input_grad[0]:
            w = folded_weight(weight, values, flat_index)
            grad_x = grad_out @ w.to(grad_out.dtype)  # (..., in)
            del w
        if ctx.needs_input_grad[3]:
            g2 = grad_out.reshape(-1, grad_out.shape[-1])  # (tokens, out)
            if ctx.dense_grad:
                x2 = saved[0].reshape(-1, saved[0].shape[-1]).to(g2.dtype)  # (tokens, in)
                grad_values = (g2.t() @ x2).view(-1).index_select(0, flat_index).float()
            else:
                grad_values = _block_grads(g2, saved, ctx.blocks)
        return grad_x, None, None, grad_values, None, None, None, None, None


def _block_grads(g2: torch.Tensor, col_slices: list[torch.Tensor], blocks) -> torch.Tensor:
    """∂Δ of every block, flat in the values' order: ∂y[:, rows]ᵀ @ x[:, cols] (fp32 accumulation).

    Blocks over the same input columns share one product (their output rows side by side), so the number of
    small matrix products is the number of distinct column ranges, not of blocks: small blocks stay cheap."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (_r0, c0, _h, w) in enumerate(blocks):
        groups.setdefault((c0, w), []).append(i)
    parts: list[torch.Tensor | None] = [None] * len(blocks)
    for (_c0, w), members in groups.items():
        xs2 = col_slices[members[0]].reshape(-1, w).to(g2.dtype)  # (tokens, w): the same columns for all
        rows = [g2[:, blocks[i][0]:blocks[i][0] + blocks[i][2]] for i in members]
        grads = ((rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)).t() @ xs2).float()  # (Σh, w)
        for i, piece in zip(members, grads.split([blocks[i][2] for i in members]), strict=True):
            parts[i] = piece.reshape(-1)
    return torch.cat(parts)


class SMTLinear(WrappedLinear):
    """Wraps a frozen ``nn.Linear`` or GPT-2 ``Conv1D`` and trains only its chosen blocks.

    ``blocks`` rows are physical rows of the (out, in) weight (a fused Q/K/V part's offset included).
    """

    def __init__(self, base: nn.Module, transposed: bool, blocks: list[tuple[int, int, int, int]],
                 values: torch.Tensor | None = None, cache: SliceCache | None = None,
                 impl: str = "auto") -> None:
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
        in_features = self.weight_out_in().shape[1]
        self.register_buffer("flat_index", block_flat_index(self.block_list, in_features, base.weight.device),
                             persistent=False)
        self.impl = pick_impl(impl, base.weight.device, self.block_list, in_features)

    def block_deltas(self):
        """Yield (row0, col0, delta (h, w)) per block, physical coordinates."""
        for (r0, c0, h, w), off in zip(self.block_list, self.offsets, strict=True):
            yield r0, c0, self.values[off:off + h * w].view(h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.disabled or not self.block_list:
            return self.base(x)
        cache = self.cache if torch.is_grad_enabled() else None
        return FoldedBlockLinearFn.apply(x, self.weight_out_in(), self.base.bias, self.values, self.flat_index,
                                         self.block_list, self.offsets, cache, self.impl == "fold")


def block_flat_index(blocks: list[tuple[int, int, int, int]], in_features: int,
                     device: torch.device) -> torch.Tensor:
    """Each value's position in the flattened (out, in) weight, in the values' order (block by block, each
    row-major): what the fold scatters into and the dense gradient gathers from."""
    if not blocks:
        return torch.zeros(0, dtype=torch.long, device=device)
    idx = [(torch.arange(r0, r0 + h).unsqueeze(1) * in_features + torch.arange(c0, c0 + w)).reshape(-1)
           for r0, c0, h, w in blocks]
    flat = torch.cat(idx)
    # int32 where it fits: the index is as large as the values themselves
    return flat.to(device=device, dtype=torch.int32 if flat.numel() and int(flat.max()) < 2**31 else torch.long)


def pick_impl(impl: str, device: torch.device, blocks: list[tuple[int, int, int, int]], in_features: int) -> str:
    """``auto``: on a GPU ``fold`` (a dense weight-gradient product beats one small kernel per block) unless
    the blocks cover under a quarter of the input columns (then saving their slices saves memory); on a CPU
    ``blocks`` (flops, not launches, are what it pays for)."""
    if impl not in IMPLS:
        raise ValueError(f"impl: must be one of {', '.join(IMPLS)}, got {impl!r}")
    if impl != "auto":
        return impl
    if device.type != "cuda":
        return "blocks"
    covered = set()
    for _r0, c0, _h, w in blocks:
        covered.update(range(c0, c0 + w))
    return "fold" if len(covered) >= DENSE_GRAD_MIN_COVERAGE * in_features else "blocks"
