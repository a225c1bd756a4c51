"""SMT's options (INTERFACE.md "Method options")."""

from __future__ import annotations

from dataclasses import dataclass

from smt_core.base import MethodConfig

SCORES = ("mean_abs_sum", "abs_mean", "l1", "l2")
POOLS = ("global", "attention_mlp")


@dataclass
class SMTConfig(MethodConfig):
    """Options of Sparse Matrix Tuning (He et al., 2024)."""

    block_size: int | None = None
    """Side of the square blocks. Default: the largest power of two <= 256 dividing every targeted side
    (64 on SmolLM2, 128 on MiniLM, 256 on GPT-2); sides it does not divide get ragged edge blocks."""
    selection_steps: int | None = None
    """Warm-up steps whose gradients are summed to score blocks. Default: 100, or one epoch if shorter."""
    score: str = "mean_abs_sum"
    """Block score from the summed gradient G: mean |G| (paper), |mean G| (reference code), L1 or L2 norm."""
    pools: str = "global"
    """global: one top-k over every block; attention_mlp: attention and MLP blocks ranked apart, the
    budget split between them in proportion to their eligible parameters (the reference code's way)."""
    head_steps: int = 20
    """Classification only: steps that train the new head alone before the warm-up, so the gradients that
    pick the blocks are not noise from a random head."""

    def __post_init__(self) -> None:
        if self.block_size is not None and (not isinstance(self.block_size, int) or self.block_size < 1):
            raise ValueError(f"block_size: must be a positive integer, got {self.block_size!r}")
        if self.selection_steps is not None and (
                not isinstance(self.selection_steps, int) or self.selection_steps < 1):
            raise ValueError(f"selection_steps: must be a positive integer, got {self.selection_steps!r}")
        if self.score not in SCORES:
            raise ValueError(f"score: must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.pools not in POOLS:
            raise ValueError(f"pools: must be one of {', '.join(POOLS)}, got {self.pools!r}")
        if not isinstance(self.head_steps, int) or self.head_steps < 0:
            raise ValueError(f"head_steps: must be an integer >= 0, got {self.head_steps!r}")
