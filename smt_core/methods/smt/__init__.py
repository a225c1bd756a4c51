"""SMT — Sparse Matrix Tuning (He et al., 2024): train only the weight blocks with the largest gradients."""

from smt_core.methods.smt.config import SMTConfig
from smt_core.methods.smt.model import SMTMethod
from smt_core.registry import register_method

register_method(SMTMethod)

__all__ = ["SMTConfig", "SMTMethod"]
