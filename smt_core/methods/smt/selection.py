"""SMT's selection: sum warm-up gradients, score square blocks, fill the budget greedily by score.

The warm-up only accumulates gradients (no optimizer step, only the eligible matrices need gradients), so
the final model is exactly W0 + the trained blocks. This deviates from the reference code, whose warm-up
also updates every weight (METHODS.md §1, "Project choice").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smt_core.methods.smt import config
from smt_core.targets import Site, geometry_of

ATTENTION = ("q", "k", "v", "o")


@dataclass
class Block:
    site: int  # index into the site list
    part: int  # index into the site's parts
    row: int  # row0 relative to the logical matrix (part)
    col: int
    height: int
    width: int
    score: float

    @property
    def size(self) -> int:
        return self.height * self.width


def default_block_size(sites: list[Site]) -> int:
    """SMT's default block size for these sites (the rule is the spec's: smt_core.methods.smt.config)."""
    return config.default_block_size(geometry_of(sites))


def tile(rows: int, cols: int, b: int) -> list[tuple[int, int, int, int]]:
    """Cut a rows×cols matrix into b×b blocks, with ragged blocks on the bottom and right edges."""
    return [(r, c, min(b, rows - r), min(b, cols - c)) for r in range(0, rows, b) for c in range(0, cols, b)]


def score_blocks(grad_sum: torch.Tensor, b: int, score: str) -> torch.Tensor:
    """Scores of the b×b tiles of one (rows, cols) summed gradient, as a (n_row_tiles, n_col_tiles) grid."""
    rows, cols = grad_sum.shape
    pr, pc = (-rows) % b, (-cols) % b
    g = torch.nn.functional.pad(grad_sum.float(), (0, pc, 0, pr))  # (R·b, C·b), zero-padded edges
    tiles = g.view(g.shape[0] // b, b, g.shape[1] // b, b).transpose(1, 2)  # (R, C, b, b)
    ones = torch.nn.functional.pad(torch.ones(rows, cols, device=g.device), (0, pc, 0, pr))
    counts = ones.view_as(g).view(tiles.shape[0], b, tiles.shape[1], b).sum((1, 3))  # true sizes
    if score == "mean_abs_sum":
        return tiles.abs().sum((2, 3)) / counts
    if score == "abs_mean":
        return (tiles.sum((2, 3)) / counts).abs()
    if score == "l1":
        return tiles.abs().sum((2, 3))
    if score == "l2":
        return tiles.pow(2).sum((2, 3)).sqrt()
    raise ValueError(f"score: unknown {score!r}")


def candidate_blocks(sites: list[Site], grad_sums: list[torch.Tensor], b: int, score: str) -> list[Block]:
    """Every tile of every targeted logical matrix with its score (grad_sums: per site, (out, in))."""
    out: list[Block] = []
    for si, (site, gs) in enumerate(zip(sites, grad_sums, strict=True)):
        for pi, part in enumerate(site.parts):
            # one device-to-host copy per matrix, not one synchronising read per block
            grid = score_blocks(gs[part.row0:part.row0 + part.rows], b, score).tolist()
            for r, c, h, w in tile(part.rows, site.in_features, b):
                out.append(Block(si, pi, r, c, h, w, float(grid[r // b][c // b])))
    return out


def fill_budget(blocks: list[Block], budget: int) -> list[Block]:
    """Take blocks in descending score order while they fit (ties broken by position, deterministic)."""
    chosen, used = [], 0
    for blk in sorted(blocks, key=lambda x: (-x.score, x.site, x.part, x.row, x.col)):
        if used + blk.size <= budget:
            chosen.append(blk)
            used += blk.size
    return chosen


def select(sites: list[Site], grad_sums: list[torch.Tensor], budget: int, b: int, score: str,
           pools: str) -> tuple[list[Block], list[Block]]:
    """Returns (chosen blocks, all candidates)."""
    cands = candidate_blocks(sites, grad_sums, b, score)  # (the spec's plan refused a budget below one block)
    if pools == "global":
        return fill_budget(cands, budget), cands
    attn = [c for c in cands if sites[c.site].parts[c.part].target in ATTENTION]
    mlp = [c for c in cands if sites[c.site].parts[c.part].target not in ATTENTION]
    total = sum(c.size for c in cands)
    attn_budget = budget * sum(c.size for c in attn) // total
    chosen = fill_budget(attn, attn_budget)
    return chosen + fill_budget(mlp, budget - sum(c.size for c in chosen)), cands
