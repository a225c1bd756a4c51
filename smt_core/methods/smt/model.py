"""SMT on a whole model: warm-up, selection, injection of :class:`SMTLinear`, save, load and merge."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from smt_core import distributed
from smt_core.base import Method, PrepareContext, add_to_weight, replace_module
from smt_core.methods.smt.config import SPEC, SMTConfig
from smt_core.methods.smt.layer import SliceCache, SMTLinear
from smt_core.methods.smt.selection import Block, select, tile
from smt_core.serving import InPlaceDelta, Patch, ServedAdapter, coalesce
from smt_core.targets import Site

DEFAULT_SELECTION_STEPS = 100  # the most warm-up steps the default takes (the paper's 100)
SELECTION_SHARE = 0.1  # the default warm-up is at most this share of the job's training steps …
MIN_SELECTION_STEPS = 10  # … but never fewer than this (nor more than one epoch)
HEAD_LR = 1e-3


def default_selection_steps(total_steps: int, steps_per_epoch: int) -> int:
    """Warm-up steps when the user names none: 10% of the job's steps, at least 10 and at most 100, never
    more than one epoch. Each warm-up step costs about one training step (a full weight gradient for every
    targeted matrix), so an uncapped one-epoch warm-up made a 2-epoch job cost 1.5× (README, "Default
    hyperparameters", for the accuracy check of the cap)."""
    epoch = max(1, steps_per_epoch)
    if total_steps <= 0:  # unknown job length: the old rule
        return min(DEFAULT_SELECTION_STEPS, epoch)
    share = math.ceil(SELECTION_SHARE * total_steps)
    return max(1, min(DEFAULT_SELECTION_STEPS, epoch, max(MIN_SELECTION_STEPS, share)))


class SMTMethod(Method):
    """Sparse Matrix Tuning: train only the b×b blocks of the targeted weights with the largest gradients.

    Default learning rate 3e-3: the reference code uses 1e-4 over 3 epochs of large data; our users' runs
    are often one or two epochs of a few hundred rows. On MiniLM / SST-2 (472 rows, 118 steps, budget 1%,
    3 seeds; bench/NOTES.md "Ablation") the validation split chose 3e-3 over 3e-4, 1e-3 and 1e-2 (the
    earlier 38-step sweep agreed: 0.710 at 3e-3, 0.688 at 1e-3); SMT's values are raw weight entries, not
    LoRA's scaled side path, so its best rate sits above LoRA's — and falls as the budget grows (more raw
    entries move the model further a step): the rate scales with sqrt(1% / budget), at most 2x
    (``SMTSpec.budget_rate_factor``; at 4% 3e-3 collapsed on one SST-2 seed of three, 1.5e-3 did not). When
    the model learns text (a causal-LM loss, no new head) the small-model rate is 1e-3: on SmolLM2-135M / PIQA
    the validation split chose 1e-3 over 3e-3 on every seed (``SMTSpec.causal_lm_learning_rate``). The
    linear decay to zero keeps the late steps small; above 200M parameters the rate moves towards the
    reference code's. The rates live on the spec alone (the API computes them torch-free).
    """

    spec = SPEC
    prepare_phase = "selection"
    sparse_delta = True

    def __init__(self, config: SMTConfig) -> None:
        super().__init__(config)
        self.config: SMTConfig = config
        self.sites: list[Site] = []
        self.block_size = 0
        self.chosen: list[Block] = []
        self.candidates: list[Block] = []
        self.wrappers: dict[str, SMTLinear] = {}
        self.selection_steps_run = 0
        self.selection_bytes = 0  # the warm-up's gradient sums + the weight gradients they are summed from

    # ---- preparation: head steps, warm-up, selection, injection -------------------------------------
    def prepare(self, ctx: PrepareContext) -> nn.Module:
        self.sites = ctx.sites
        self.block_size = self.plan(ctx.sites, ctx.budget).block_size  # refuses a budget below one block
        head_opt = self._head_optimizer(ctx) if ctx.head_parameters else None
        if head_opt is not None and self.config.head_steps:
            self._train_head(ctx, head_opt)
        grad_sums = self._warm_up(ctx, head_opt if self.config.warmup_trains_head else None)
        chosen, self.candidates = select(ctx.sites, grad_sums, ctx.budget, self.block_size,
                                         self.config.score, self.config.pools)
        # every rank trains rank 0's blocks (the summed gradients agree, but a tie must not split them)
        self.chosen = [Block(*b) for b in distributed.broadcast_json([dataclasses.astuple(b) for b in chosen])]
        del grad_sums  # as large as the eligible matrices: free before training starts
        self._inject(ctx.model, self.chosen)
        return ctx.model

    def prepare_from(self, ctx: PrepareContext, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> nn.Module:
        """Continue a parent run. ``reuse`` (the default): the parent's block table and values, no warm-up.
        ``fresh``: the warm-up runs on the parent's adapted model (its blocks folded into the weights, which
        are restored exactly afterwards), and each block chosen again starts from the parent's values, a new
        one from zeros. The parent's head is trained already: no head-only steps."""
        if (self.config.selection or "reuse") == "reuse":
            return self.load(ctx.model, ctx.sites, tensors, info)
        self.sites = ctx.sites
        self.block_size = self.plan(ctx.sites, ctx.budget).block_size
        parent, parent_values = self._blocks_from_tensors(ctx.sites, tensors)
        saved = {id(s): s.module.weight.detach().clone() for s in ctx.sites}
        try:
            self.merge(ctx.model, ctx.sites, tensors, info)  # the gradients are the parent's adapted model's
            grad_sums = self._warm_up(ctx)
        finally:
            with torch.no_grad():
                for s in ctx.sites:
                    s.module.weight.copy_(saved[id(s)])
        del saved
        chosen, self.candidates = select(ctx.sites, grad_sums, ctx.budget, self.block_size,
                                         self.config.score, self.config.pools)
        self.chosen = [Block(*b) for b in distributed.broadcast_json([dataclasses.astuple(b) for b in chosen])]
        del grad_sums
        self._inject(ctx.model, self.chosen, _carried_values(self.chosen, parent, parent_values))
        return ctx.model

    @staticmethod
    def _head_optimizer(ctx: PrepareContext) -> torch.optim.Optimizer:
        """The new head's own optimizer for preparation (head-only steps, and the warm-up when it trains the
        head); training proper builds its optimizer afresh."""
        return torch.optim.AdamW(ctx.head_parameters, lr=HEAD_LR, weight_decay=0.0)

    def _train_head(self, ctx: PrepareContext, opt: torch.optim.Optimizer) -> None:
        """A new classification head is random; train it alone first so warm-up gradients carry signal."""
        assert ctx.batches is not None and ctx.loss_fn is not None
        batches = ctx.batches()
        for _ in range(self.config.head_steps):
            ctx.callbacks.check_stop()
            loss = ctx.loss_fn(ctx.model, next(batches))
            loss.backward()
            distributed.sync_gradients(ctx.head_parameters)
            opt.step()
            opt.zero_grad(set_to_none=True)
        ctx.callbacks.fire("on_log", message=f"smt: trained the new head alone for {self.config.head_steps} steps",
                           level="info")

    def _warm_up(self, ctx: PrepareContext, head_opt: torch.optim.Optimizer | None = None) -> list[torch.Tensor]:
        """Sum the targeted weights' gradients over the warm-up steps (fp32; the weights take no step). With
        ``head_opt`` the head keeps its gradient and takes a step after each backward (no extra pass)."""
        assert ctx.batches is not None and ctx.loss_fn is not None
        steps = self.config.selection_steps or default_selection_steps(ctx.total_steps, ctx.steps_per_epoch)
        head_flags = [p.requires_grad for p in ctx.head_parameters]
        for p in ctx.head_parameters:
            p.requires_grad_(head_opt is not None and p.requires_grad)
        weights = [s.module.weight for s in ctx.sites]
        for w in weights:
            w.requires_grad_(True)
        sums = [torch.zeros(s.out_features, s.in_features, dtype=torch.float32, device=w.device)
                for s, w in zip(ctx.sites, weights, strict=True)]
        batches = ctx.batches()
        try:
            for step in range(steps):
                ctx.callbacks.check_stop()
                loss = ctx.loss_fn(ctx.model, next(batches))
                loss.backward()
                grad_bytes = sum(w.grad.untyped_storage().nbytes() for w in weights if w.grad is not None)
                sum_bytes = sum(acc.untyped_storage().nbytes() for acc in sums)
                self.selection_bytes = max(self.selection_bytes, grad_bytes + sum_bytes)
                for s, w, acc in zip(ctx.sites, weights, sums, strict=True):
                    if w.grad is None:  # this rank's share of the batch was empty
                        continue
                    g = w.grad.t() if s.transposed else w.grad  # (out, in)
                    acc += g.float()
                    w.grad = None
                if head_opt is not None:
                    distributed.sync_gradients(ctx.head_parameters)
                    head_opt.step()
                    head_opt.zero_grad(set_to_none=True)
                ctx.callbacks.fire("on_log", message=f"smt: selection step {step + 1}/{steps} loss {loss.item():.4f}",
                                   level="debug")
        finally:
            for w in weights:
                w.requires_grad_(False)
                w.grad = None
            for p, flag in zip(ctx.head_parameters, head_flags, strict=True):
                p.requires_grad_(flag)
        distributed.all_reduce_(sums)  # each rank summed its token-weighted share: the total is the global sum
        self.selection_steps_run = steps
        return sums

    def _inject(self, model: nn.Module, chosen: list[Block],
                values: dict[tuple[int, int], torch.Tensor] | None = None) -> None:
        """Wrap every site that holds chosen blocks; blocks ordered by (part, row, col)."""
        cache = SliceCache()  # one cache for the model: Q, K and V share their input's slices
        by_site: dict[int, list[Block]] = {}
        for blk in sorted(chosen, key=lambda b: (b.site, b.part, b.row, b.col)):
            by_site.setdefault(blk.site, []).append(blk)
        self.wrappers = {}
        for si, blocks in by_site.items():
            site = self.sites[si]
            phys = [(site.parts[b.part].row0 + b.row, b.col, b.height, b.width) for b in blocks]
            init = None
            if values is not None:
                init = torch.cat([values[(si, pi)] for pi in sorted({b.part for b in blocks})])
            wrapper = SMTLinear(site.module, site.transposed, phys, init, cache)
            replace_module(model, site.name, wrapper)
            self.wrappers[site.name] = wrapper

    # ---- what trains, what is saved ------------------------------------------------------------------
    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [w.values for w in self.wrappers.values()]

    def _part_blocks(self) -> dict[tuple[int, int], list[Block]]:
        grouped: dict[tuple[int, int], list[Block]] = {}
        for blk in sorted(self.chosen, key=lambda b: (b.site, b.part, b.row, b.col)):
            grouped.setdefault((blk.site, blk.part), []).append(blk)
        return grouped

    def adapter_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        offsets: dict[str, int] = {}
        for (si, pi), blocks in self._part_blocks().items():
            site, part = self.sites[si], self.sites[si].parts[pi]
            wrapper = self.wrappers[site.name]
            start = offsets.get(site.name, 0)
            n = sum(b.size for b in blocks)
            prefix = f"{site.name}.{part.target}"
            tensors[f"{prefix}.blocks"] = torch.tensor(
                [[b.row, b.col, b.height, b.width] for b in blocks], dtype=torch.int32)
            tensors[f"{prefix}.values"] = wrapper.values.detach()[start:start + n].float().cpu().contiguous()
            offsets[site.name] = start + n
        return tensors

    def adapter_info(self) -> dict[str, Any]:
        return {
            "block_size": self.block_size,
            "score": self.config.score,
            "pools": self.config.pools,
            "selection_steps": self.selection_steps_run,
            "head_steps": self.config.head_steps,
            "warmup_trains_head": self.config.warmup_trains_head,
            "modules": [
                {"name": self.sites[si].name, "target": self.sites[si].parts[pi].target,
                 "row_offset": self.sites[si].parts[pi].row0, "rows": self.sites[si].parts[pi].rows,
                 "cols": self.sites[si].in_features, "n_blocks": len(blocks)}
                for (si, pi), blocks in self._part_blocks().items()
            ],
        }

    # ---- load, merge, export -------------------------------------------------------------------------
    def _blocks_from_tensors(self, sites: list[Site], tensors: dict[str, torch.Tensor]):
        chosen, values = [], {}
        for si, site in enumerate(sites):
            for pi, part in enumerate(site.parts):
                key = f"{site.name}.{part.target}"
                if f"{key}.blocks" not in tensors:
                    continue
                table = tensors[f"{key}.blocks"].tolist()
                chosen += [Block(si, pi, r, c, h, w, 0.0) for r, c, h, w in table]
                values[(si, pi)] = tensors[f"{key}.values"]
        return chosen, values

    def load(self, model: nn.Module, sites: list[Site], tensors: dict[str, torch.Tensor],
             info: dict[str, Any]) -> nn.Module:
        self.sites = sites
        self.block_size = int(info.get("block_size", 0))
        self.chosen, values = self._blocks_from_tensors(sites, tensors)
        self._inject(model, self.chosen, values)
        return model

    def _block_deltas(self, sites: list[Site], tensors: dict[str, torch.Tensor]):
        """Yield (site, physical row0, col0, delta (h, w)) for every saved block."""
        chosen, values = self._blocks_from_tensors(sites, tensors)
        offsets: dict[tuple[int, int], int] = {}
        for b in chosen:
            off = offsets.get((b.site, b.part), 0)
            offsets[(b.site, b.part)] = off + b.size
            site = sites[b.site]
            delta = values[(b.site, b.part)][off:off + b.size].view(b.height, b.width)
            yield site, site.parts[b.part].row0 + b.row, b.col, delta

    def merge(self, model: nn.Module, sites: list[Site], tensors: dict[str, torch.Tensor],
              info: dict[str, Any]) -> None:
        for site, r0, c0, delta in self._block_deltas(sites, tensors):
            add_to_weight(site, r0, delta, c0)

    def served_adapter(self, name, sites, tensors, info, targets) -> ServedAdapter:
        """Blocks stay blocks: a slice copy each when swapped, 4 bytes a value and no index per entry."""
        patches: dict[str, list[Patch]] = {}
        for site, r0, c0, delta in self._block_deltas(sites, tensors):
            patches.setdefault(site.name, []).append(Patch(delta.float().contiguous(), r0, c0))
        return InPlaceDelta({name: coalesce(ps) for name, ps in patches.items()}, targets)

    def sparse_deltas(self, model, sites, tensors, info):
        per_module: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for site, r0, c0, delta in self._block_deltas(sites, tensors):
            h, w = delta.shape
            rr, cc = torch.meshgrid(torch.arange(r0, r0 + h), torch.arange(c0, c0 + w), indexing="ij")
            idx, vals = per_module.setdefault(site.name, ([], []))
            idx.append(torch.stack([rr.reshape(-1), cc.reshape(-1)]))
            vals.append(delta.reshape(-1))
        return {name: (torch.cat(i, 1), torch.cat(v)) for name, (i, v) in per_module.items()}

    def report(self, model: nn.Module) -> dict[str, Any]:
        n = sum(b.size for b in self.chosen)
        return {"trainable_params": n, "delta_nonzeros": n, "blocks": len(self.chosen),
                "block_size": self.block_size, "selection_bytes": self.selection_bytes,
                "selection": selection_summary(self.sites, self.chosen)}

    def blocks_report(self) -> dict[str, Any] | None:
        if not self.sites:
            return None
        chosen = {(b.site, b.part, b.row, b.col) for b in self.chosen}
        scores = {(b.site, b.part, b.row, b.col): b.score for b in self.candidates or self.chosen}
        modules = []
        for si, site in enumerate(self.sites):
            for pi, part in enumerate(site.parts):
                blocks = [{"row": r // self.block_size, "col": c // self.block_size, "row0": r, "col0": c,
                           "height": h, "width": w, "score": scores.get((si, pi, r, c), 0.0)}
                          for r, c, h, w in tile(part.rows, site.in_features, self.block_size)
                          if (si, pi, r, c) in chosen]
                modules.append({"name": site.name, "layer": site.layer, "target": part.target,
                                "rows": part.rows, "cols": site.in_features, "blocks": blocks})
        return {"block_size": self.block_size, "modules": modules}


def _carried_values(chosen: list[Block], parent: list[Block],
                    parent_values: dict[tuple[int, int], torch.Tensor]) -> dict[tuple[int, int], torch.Tensor]:
    """Initial values per (site, part), in the (row, col) order :meth:`SMTMethod._inject` concatenates them:
    a block the parent also had (same place and shape) keeps the parent's values, any other starts at zero."""
    had: dict[tuple[int, int, int, int, int, int], torch.Tensor] = {}
    offsets: dict[tuple[int, int], int] = {}
    for b in parent:
        off = offsets.get((b.site, b.part), 0)
        had[(b.site, b.part, b.row, b.col, b.height, b.width)] = parent_values[(b.site, b.part)][off:off + b.size]
        offsets[(b.site, b.part)] = off + b.size
    parts: dict[tuple[int, int], list[torch.Tensor]] = {}
    for b in sorted(chosen, key=lambda b: (b.site, b.part, b.row, b.col)):
        value = had.get((b.site, b.part, b.row, b.col, b.height, b.width))
        parts.setdefault((b.site, b.part), []).append(
            value.float() if value is not None else torch.zeros(b.size, dtype=torch.float32))
    return {key: torch.cat(vs) for key, vs in parts.items()}


def _tally(counts: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
    """{target: [blocks, params]} → {target: {blocks, params, share}}, share of these params (0 when none)."""
    total = sum(params for _, params in counts.values())
    return {t: {"blocks": nb, "params": np_, "share": np_ / total if total else 0.0}
            for t, (nb, np_) in counts.items()}


def selection_summary(sites: list[Site], chosen: list[Block]) -> dict[str, Any]:
    """What SMT chose, as numbers (``metrics.selection``): blocks, parameters and share per target and per
    layer. Why: the SMT paper's central observation is that V takes most of the budget; this makes that
    visible per job (dashboard summary, compare view) without reading the block table. Every targeted
    matrix is listed, chosen or not (a zero says "never picked"). ``by_target`` shares are of all chosen
    parameters; a layer's ``share`` is of all chosen parameters too, its ``by_target`` shares of that
    layer's own — each set sums to 1 (when anything was chosen)."""
    by_target: dict[str, list[int]] = {}
    layers: dict[int, dict[str, list[int]]] = {}
    for site in sites:
        for part in site.parts:
            by_target.setdefault(part.target, [0, 0])
            layers.setdefault(site.layer, {}).setdefault(part.target, [0, 0])
    for b in chosen:
        site = sites[b.site]
        target = site.parts[b.part].target
        for counts in (by_target[target], layers[site.layer][target]):
            counts[0] += 1
            counts[1] += b.size
    total = sum(params for _, params in by_target.values())
    by_layer = []
    for layer in sorted(layers):
        nb = sum(c[0] for c in layers[layer].values())
        params = sum(c[1] for c in layers[layer].values())
        by_layer.append({"layer": layer, "blocks": nb, "params": params,
                         "share": params / total if total else 0.0, "by_target": _tally(layers[layer])})
    return {"by_target": _tally(by_target), "by_layer": by_layer}
