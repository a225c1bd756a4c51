"""Full fine-tuning's spec: no options; the budget is ignored and the real count (every base weight) reported."""

from __future__ import annotations

from smt_core.methods.spec import FixedSpec, Geometry, NoOptions

FullConfig = NoOptions


class FullSpec(FixedSpec):
    name = "full"
    order = 50
    engine = "smt_core.methods.full.model:FullMethod"
    default_learning_rate = 5e-5  # see FullMethod's notes
    large_model_learning_rate = 2e-5  # Stanford Alpaca's full fine-tuning of LLaMA-7B
    trains_base = True

    def trainable(self, geometry: Geometry) -> int:
        return geometry.total_params  # tied weights once; a new classification head is reported apart


SPEC = FullSpec()
