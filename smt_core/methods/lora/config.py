"""LoRA / DoRA options and specs (INTERFACE.md: ``alpha``, ``dropout``): torch-free, shared by the engine, the
estimate and the API. The rank arithmetic (METHODS.md §3) lives here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

from smt_core.methods.options import ConfigError, MethodConfig, option
from smt_core.methods.spec import Geometry, MethodSpec, Plan


@dataclass
class LoraOptions(MethodConfig):
    """Options for PEFT's LoRA (and DoRA, which is ``LoraConfig(use_dora=True)``)."""

    alpha: float | None = option(
        "number", None, minimum=0, maximum=10_000, exclusive_minimum=True,
        help="Scaling numerator, > 0. Default: 2·rank (scale 2), the common choice that keeps the update's "
             "size steady as the budget changes the rank.")
    dropout: float = option(
        "number", 0.0, minimum=0, maximum=1, exclusive_maximum=True,
        help="Dropout on the adapter's input, in [0, 1); 0 by default (short runs, small data: dropout only "
             "slows them).")


class LoraSpec(MethodSpec):
    name = "lora"
    order = 30
    config = LoraOptions
    engine = "smt_core.methods.lora.model:LoraMethod"
    default_learning_rate = 1e-3  # see LoraMethod's notes (DoRA too)
    large_model_learning_rate = 2e-4  # LoRA/QLoRA and DoRA's LLaMA-7B runs (DoRA: 1e-4 to 2e-4)
    reads_inputs = True
    magnitude = False  # DoRA also trains a magnitude per output row

    def check_targets(self, geometry: Geometry) -> None:
        """PEFT adapts whole modules: of GPT-2's fused Q/K/V, all three or none."""
        for m in geometry.modules:
            if sum(rows for _, rows in m.parts) != m.out_features:
                only = ",".join(t for t, _ in m.parts)
                raise ConfigError("targets", f"{self.name} adapts whole modules, but {m.name or 'a module'} fuses "
                                  f"{m.out_features // max(1, m.parts[0][1])} projections and only {only} are "
                                  "targeted; target all of q,k,v or use smt")

    def plan(self, geometry: Geometry, budget: int | None, config: LoraOptions) -> Plan:
        """rank = floor((budget − magnitudes) / Σ(in + out)) over the adapted modules."""
        budget = self.needs_budget(budget)
        sides = sum(m.in_features + m.out_features for m in geometry.modules)
        extra = sum(m.out_features for m in geometry.modules) if self.magnitude else 0
        rank = (budget - extra) // sides if sides else 0
        if rank < 1:
            raise ConfigError("budget", f"{budget} parameters is below rank 1 for {self.name} on these targets "
                              f"(needs {sides + extra})")
        return Plan(rank * sides + extra, rank=rank)


class DoraSpec(LoraSpec):
    name = "dora"
    order = 40
    engine = "smt_core.methods.lora.model:DoraMethod"
    magnitude = True
    output_copies = 2  # the base and LoRA outputs of each module, for the magnitude's gradient


SPEC = LoraSpec()
DORA_SPEC = DoraSpec()
