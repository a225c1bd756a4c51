"""SNELL's options and spec (INTERFACE.md: ``sparsity``, ``rule``, ``learn_coefficients``): torch-free, shared
by the engine, the estimate and the API. The rank arithmetic lives here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

from smt_core.methods.options import ConfigError, MethodConfig, option
from smt_core.methods.spec import Geometry, MethodSpec, Plan

HALVES = 2  # P: the rank is split in two halves (the released piecewise-linear kernel)
RULES = ("released", "paper")


@dataclass
class SnellConfig(MethodConfig):
    """Options of one SNELL run."""

    sparsity: float = option(
        "number", 0.9, minimum=0, maximum=1, exclusive_maximum=True,
        help="s in [0, 1): the share of each ΔW zeroed by the competition; n_keep = m·n − floor(s·m·n). "
             "0.9 is the paper's choice for its large models.")
    rule: str = option(
        "string", "released", enum=RULES,
        help="Survivor rule: 'released' (ΔW ⊙ |ΔW| on the top n_keep, the authors' code) or 'paper' "
             "(ΔW ⊙ max(|ΔW| − t, 0), Eq. 5).")
    learn_coefficients: bool = option(
        "boolean", False,
        help="Train the kernel coefficients c per module (the paper) instead of fixing c = (+0.1, −0.1) "
             "(the released code).")


class SnellSpec(MethodSpec):
    name = "snell"
    order = 20
    config = SnellConfig
    engine = "smt_core.methods.snell.model:SnellMethod"
    default_learning_rate = 5e-3  # see SnellMethod's notes
    large_model_learning_rate = 1e-3  # the released code's rate; no 7B run published, not measured here
    reads_inputs = True

    def plan(self, geometry: Geometry, budget: int | None, config: SnellConfig) -> Plan:
        """r = 2·floor(budget / (2·Σ(in + part rows))): (in + rows)·r factor parameters per logical matrix,
        plus its P coefficients when they are learned."""
        budget = self.needs_budget(budget)
        mats = geometry.matrices
        per_rank = sum(rows + cols for rows, cols in mats)
        if per_rank == 0:
            raise ConfigError("targets", "snell needs at least one targeted projection")
        rank = HALVES * (budget // (HALVES * per_rank))
        if rank < HALVES:
            raise ConfigError("budget", f"{budget} parameters give SNELL rank {rank}; rank {HALVES} over these "
                              f"targets needs at least {HALVES * per_rank} parameters")
        coefficients = HALVES * len(mats) if config.learn_coefficients else 0
        return Plan(rank * per_rank + coefficients, rank=rank)


SPEC = SnellSpec()
