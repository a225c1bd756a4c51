"""SMT's options and spec (INTERFACE.md "Method options"): torch-free, shared by the engine, the estimate
and the API. The default block size and the budget's block arithmetic live here and nowhere else."""

from __future__ import annotations

import math
from dataclasses import dataclass

from smt_core.methods.options import ConfigError, MethodConfig, option
from smt_core.methods.spec import Geometry, MethodSpec, Plan

SCORES = ("mean_abs_sum", "abs_mean", "l1", "l2")
POOLS = ("global", "attention_mlp")
SELECTIONS = ("reuse", "fresh")  # a continued run (init_from): the parent's blocks, or a new warm-up
BLOCK_CAP = 256  # the default block size is the largest power of two up to this dividing every targeted side …
MIN_DIVIDING_BLOCK = 16  # … unless that is below this: then RAGGED_BLOCK, with ragged edge blocks
# … of which the budget buys at least this many blocks: on MiniLM / SST-2 at 1% (bench/NOTES.md, "Ablation"),
# 221 blocks of 32 beat 55 of 64 and 13 of 128 by 1.7-2.4 points; LLaMA-7B at 1% still gets the paper's 256
MIN_BLOCKS = 200
RAGGED_BLOCK = 64
# The default learning rate is measured at a budget of 1% of the base model's parameters and scales with
# sqrt(1% / budget), at most RATE_FACTOR_MAX times: on MiniLM / SST-2 (bench/NOTES.md, "Budget and learning
# rate") 3e-3 at a 4% budget trained worse than at 1% and collapsed on one seed of three, 1.5e-3 did not; at
# 0.25%, 6e-3 beat 3e-3. More entries trained at a raw-weight rate move the function further per step.
RATE_REFERENCE_BUDGET = 0.01
RATE_FACTOR_MAX = 2.0  # tiny budgets: no more than twice the 1% rate (6e-3 measured at 0.25%)
MAX_STEPS_OPTION = 10_000_000


@dataclass
class SMTConfig(MethodConfig):
    """Options of Sparse Matrix Tuning (He et al., 2024)."""

    block_size: int | None = option(
        "integer", None, minimum=1, maximum=4096,
        help="Side of the square blocks. Default: the largest power of two <= 256 dividing every targeted side "
             "of which the budget buys at least 200 blocks (at a 1% budget: 32 on MiniLM, 64 on SmolLM2 and "
             "GPT-2, 256 on LLaMA-7B), else the smallest such power >= 16; 64 when none >= 16 divides them. "
             "Sides a block size does not divide get ragged edge blocks.")
    selection_steps: int | None = option(
        "integer", None, minimum=1, maximum=MAX_STEPS_OPTION, bounded_by_max_steps=True,
        help="Warm-up steps whose gradients are summed to score blocks. Default: 10% of the job's steps, at "
             "least 10 and at most 100, never more than one epoch.")
    score: str = option(
        "string", "mean_abs_sum", enum=SCORES,
        help="Block score from the summed gradient G: mean |G| (mean_abs_sum, the paper), |mean G| (abs_mean, "
             "the reference code), or the L1 or L2 norm.")
    pools: str = option(
        "string", "global", enum=POOLS,
        help="global: one top-k over every block; attention_mlp: attention and MLP blocks ranked apart, the "
             "budget split between them in proportion to their eligible parameters (the reference code's way).")
    head_steps: int = option(
        "integer", 20, minimum=0, maximum=MAX_STEPS_OPTION, bounded_by_max_steps=True,
        help="Classification only: steps that train the new head alone before the warm-up, so the gradients "
             "that pick the blocks are not noise from a random head (0: none).")
    warmup_trains_head: bool = option(
        "boolean", False,
        help="Classification only: the warm-up's backward passes also update the new head (its gradient comes "
             "free with the weights'), so fewer head-only steps are needed before it.")
    selection: str | None = option(
        "string", None, enum=SELECTIONS,
        help="Only when continuing a finished job (init_from): reuse keeps the parent's blocks and values and "
             "runs no warm-up; fresh runs the warm-up again on the parent's adapted model and starts the blocks "
             "chosen again from the parent's values (zeros elsewhere). Default: reuse when continuing; refused "
             "otherwise.")


def default_block_size(geometry: Geometry, budget: int | None = None) -> int:
    """The largest power of two <= BLOCK_CAP dividing every targeted side of which the budget buys at least
    MIN_BLOCKS blocks (else the smallest such power >= MIN_DIVIDING_BLOCK; with no budget, the largest);
    RAGGED_BLOCK if no power of two >= MIN_DIVIDING_BLOCK divides them (tiny blocks would make selection slow
    and the block table large)."""
    g = 0
    for rows, cols in geometry.matrices:
        g = math.gcd(math.gcd(g, rows), cols)
    dividing = []
    b = MIN_DIVIDING_BLOCK
    while b <= BLOCK_CAP and g % b == 0:
        dividing.append(b)
        b *= 2
    if not dividing:
        return RAGGED_BLOCK
    if budget is None:
        return dividing[-1]
    return next((b for b in reversed(dividing) if budget // (b * b) >= MIN_BLOCKS), dividing[0])


def _edge(side: int, b: int) -> int:
    """The size of the last tile along a side of ``side`` cut into ``b``-wide tiles (ragged or whole)."""
    return side - b * ((side - 1) // b)


class SMTSpec(MethodSpec):
    name = "smt"
    order = 10
    config = SMTConfig
    engine = "smt_core.methods.smt.model:SMTMethod"
    default_learning_rate = 3e-3  # a new classification head on MiniLM (see SMTMethod's notes)
    causal_lm_learning_rate = 1e-3  # SmolLM2-135M on PIQA's choices: validation-chosen over 3e-3
    large_model_learning_rate = 1e-4  # SMT's reference code on LLaMA-7B commonsense (9.65e-6 on math)
    selects_blocks = True

    def budget_rate_factor(self, base_params: int, budget_params: int | None) -> float:
        """sqrt(1% / budget fraction), at most RATE_FACTOR_MAX (1 at the default budget or without one)."""
        if not budget_params or not base_params:
            return 1.0
        return min(RATE_FACTOR_MAX, math.sqrt(RATE_REFERENCE_BUDGET * base_params / budget_params))

    def plan(self, geometry: Geometry, budget: int | None, config: SMTConfig) -> Plan:
        """Blocks fill the budget greedily by score, so the count is whole blocks up to the budget (capped at
        every targeted weight). Exact when the block size divides every side; with ragged edge blocks the
        count depends on which blocks win, and this counts whole blocks."""
        budget = self.needs_budget(budget)
        b = config.block_size or default_block_size(geometry, budget)
        mats = geometry.matrices
        if not mats:
            raise ConfigError("targets", "smt needs at least one targeted projection")
        smallest = min(_edge(rows, b) * _edge(cols, b) for rows, cols in mats)
        if budget < smallest:
            raise ConfigError("budget", f"{budget} parameters is smaller than one block ({smallest} parameters at "
                              f"block_size {b}); raise the budget or lower block_size")
        capacity = sum(rows * cols for rows, cols in mats)
        return Plan(max(smallest, min(budget // (b * b) * b * b, capacity)), block_size=b)


SPEC = SMTSpec()
