"""Full fine-tuning's spec: no options; the budget is ignored and the real count (every base weight) reported."""

from __future__ import annotations

from smt_core.methods.spec import FixedSpec, Geometry, NoOptions

FullConfig = NoOptions


class FullSpec(FixedSpec):
    name = "full"
    order = 50
    engine = "smt_core.methods.full.model:FullMethod"
    default_learning_rate, large_model_learning_rate = 5e-5, 2e-5  # as FullMethod's (see its notes)
    trains_base = True

    def trainable(self, geometry: Geometry) -> int:
        return geometry.total_params  # tied weights once; a new classification head is reported apart


SPEC = FullSpec()
