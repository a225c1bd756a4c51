"""Full fine-tuning's spec: no options; the budget is ignored and the real count (every base weight) reported."""

from __future__ import annotations

from dataclasses import dataclass

from smt_core.methods.options import MethodConfig
from smt_core.methods.spec import Geometry, MethodSpec, Plan


@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning has no options."""


class FullSpec(MethodSpec):
    name = "full"
    order = 50
    config = FullConfig
    engine = "smt_core.methods.full.model:FullMethod"
    uses_budget = False
    trains_base = True

    def plan(self, geometry: Geometry, budget: int | None, config: FullConfig) -> Plan:
        return Plan(geometry.total_params)  # tied weights once; a new classification head is reported apart


SPEC = FullSpec()
