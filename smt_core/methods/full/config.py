"""Full fine-tuning's spec: no options; the budget is ignored and the real count (every base weight) reported."""

from __future__ import annotations

from smt_core.methods.spec import FixedSpec, Geometry, NoOptions

FullConfig = NoOptions


class FullSpec(FixedSpec):
    name = "full"
    order = 50
    engine = "smt_core.methods.full.model:FullMethod"
    trains_base = True

    def trainable(self, geometry: Geometry) -> int:
        return geometry.total_params  # tied weights once; a new classification head is reported apart


SPEC = FullSpec()
