"""SNELL's method options (INTERFACE.md: ``sparsity``, ``rule``, ``learn_coefficients``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from smt_core.base import MethodConfig
from smt_core.methods.snell.kernel import RULES


@dataclass
class SnellConfig(MethodConfig):
    """Options of one SNELL run; unknown names are refused by ``MethodConfig.from_options``."""

    sparsity: float = field(default=0.9, metadata={
        "help": "s in [0, 1): the share of each ΔW zeroed by the competition; n_keep = m·n − floor(s·m·n). "
                "0.9 is the paper's choice for its large models."})
    rule: str = field(default="released", metadata={
        "help": "survivor rule: 'released' (ΔW ⊙ |ΔW| on the top n_keep, the authors' code) or 'paper' "
                "(ΔW ⊙ max(|ΔW| − t, 0), Eq. 5)."})
    learn_coefficients: bool = field(default=False, metadata={
        "help": "train the kernel coefficients c per module (the paper) instead of fixing c = (+0.1, −0.1) "
                "(the released code)."})

    def __post_init__(self) -> None:
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, int | float) or not 0 <= s < 1:
            raise ValueError(f"sparsity: must be a number in [0, 1), got {s!r}")
        self.sparsity = float(s)
        if self.rule not in RULES:
            raise ValueError(f"rule: must be one of {', '.join(RULES)}, got {self.rule!r}")
        if not isinstance(self.learn_coefficients, bool):
            raise ValueError(f"learn_coefficients: must be true or false, got {self.learn_coefficients!r}")
