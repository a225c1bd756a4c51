"""Head only's spec: no options, no budget, nothing of the base model trains.

The CLI offers it (the linear probe every classification fine-tune must beat: whatever a method adds on top
of it is what the method's trainable parameters bought); the service does not (``served = False``): job
creation refuses it and ``GET /v1/methods`` leaves it out, as before the registry existed.
"""

from __future__ import annotations

from smt_core.methods.spec import FixedSpec, Geometry, NoOptions

HeadConfig = NoOptions


class HeadSpec(FixedSpec):
    name = "head"
    order = 60
    engine = "smt_core.methods.head.model:HeadMethod"
    default_learning_rate = 2e-3  # see HeadMethod's notes
    served = False

    def trainable(self, geometry: Geometry) -> int:
        return 0  # the new head trains in every method and is reported apart (head_params)


SPEC = HeadSpec()
