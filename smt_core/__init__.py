"""sparsetune's engine: sparse fine-tuning (SMT, SNELL) and PEFT baselines behind one registry.

The public entry point is :func:`run`: it takes a plain :class:`TrainSpec` and reports progress through
:class:`Callbacks`. The CLI's ``train`` and the service's worker call the same function.
"""

from smt_core.callbacks import Callbacks, Cancelled
from smt_core.spec import TrainSpec

__version__ = "0.1.0"


def run(spec: TrainSpec, callbacks: Callbacks | None = None):
    """Train one adapter as ``spec`` says; returns a :class:`smt_core.trainer.RunResult`.

    ``spec.num_devices > 1`` starts the other ranks here (this process is rank 0), or, under ``torchrun``,
    joins the ranks it started. Only rank 0's result carries metrics and files (``RunResult.main``)."""
    from smt_core import distributed  # torch is imported only when training is asked for
    from smt_core.trainer import train

    if spec.num_devices > 1 and not distributed.is_active():
        if distributed.started_by_torchrun():  # every rank runs this; join the group torchrun set up
            distributed.init_from_env(distributed.backend_for(spec.device))
            try:
                return train(spec, callbacks or Callbacks())
            finally:
                distributed.teardown()
        from smt_core.launch import launch

        return launch(spec, callbacks or Callbacks())
    return train(spec, callbacks or Callbacks())


__all__ = ["Callbacks", "Cancelled", "TrainSpec", "run", "__version__"]
