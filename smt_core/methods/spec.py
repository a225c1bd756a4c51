"""What a method is to everything except its training code: a :class:`MethodSpec`.

PEFT keeps a config mapping apart from its tuner mapping; so do we. A spec (torch-free) holds the method's
options (its config class), whether it takes a budget, the checks a budget and a target set must pass, and the
trainable-parameter arithmetic (:meth:`MethodSpec.plan`). The engine's method class (``spec.engine``, imported
only when a run needs it) calls the same ``plan`` for its rank or block size, the estimate calls it on the
shapes read from a config.json, and the API calls it to refuse, before a job is queued, what the engine would
refuse — so the count shown before launch is the count the run gets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from smt_core.methods.options import ConfigError, MethodConfig


@dataclass(frozen=True)
class Module:
    """One physical module a method adapts, in the (out, in) orientation: the targeted logical matrices it
    holds as (target, rows) — one for a plain projection, up to three for GPT-2's fused Q/K/V."""

    name: str
    in_features: int
    out_features: int
    parts: tuple[tuple[str, int], ...]

    @property
    def matrices(self) -> list[tuple[int, int]]:
        """(rows, cols) of each targeted logical matrix."""
        return [(rows, self.in_features) for _, rows in self.parts]


@dataclass(frozen=True)
class Geometry:
    """The targeted modules of a whole model (every layer) and the base model's parameter count."""

    modules: tuple[Module, ...]
    total_params: int

    @property
    def matrices(self) -> list[tuple[int, int]]:
        return [m for module in self.modules for m in module.matrices]


@dataclass(frozen=True)
class Plan:
    """What a method trains for a budget: its parameter count, and the rank or block size that gives it."""

    trainable: int
    rank: int = 0
    block_size: int = 0


def resolve_budget(budget: float | int | None, total_params: int) -> int | None:
    """A budget as a parameter count: an int (or a whole float >= 1) is a count, a float in (0, 1) a fraction
    of the base model's parameters."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int | float):
        raise ConfigError("budget", f"must be a number, got {budget!r}")
    if isinstance(budget, float) and budget.is_integer() and budget >= 1:
        budget = int(budget)
    if isinstance(budget, float):
        if not 0 < budget < 1:
            raise ConfigError("budget", f"a fraction must be in (0, 1), got {budget}")
        return max(1, int(budget * total_params))
    if budget < 1:
        raise ConfigError("budget", f"a parameter count must be >= 1, got {budget}")
    return budget


# The default learning rates were measured on models of ≤ 135M parameters; the papers' rates for 7B models
# are lower. Between these sizes the default moves log-linearly from one to the other (in log parameters).
MEASURED_UP_TO_PARAMS = 200_000_000
PAPER_MODEL_PARAMS = 7_000_000_000


def scaled_learning_rate(small: float, large: float | None, base_params: int) -> float:
    """``small`` up to 200M parameters, ``large`` from 7B on, log-linear in between (both axes in log)."""
    if large is None or base_params <= MEASURED_UP_TO_PARAMS:
        return small
    if base_params >= PAPER_MODEL_PARAMS:
        return large
    t = math.log(base_params / MEASURED_UP_TO_PARAMS) / math.log(PAPER_MODEL_PARAMS / MEASURED_UP_TO_PARAMS)
    return math.exp((1 - t) * math.log(small) + t * math.log(large))


class MethodSpec:
    """A method's description. Subclasses set the class attributes and :meth:`plan`.

    The attributes after ``served`` describe what training keeps in memory; the estimate reads them instead
    of a method's name."""

    name: ClassVar[str]
    config: ClassVar[type[MethodConfig]]
    engine: ClassVar[str]  # "module:Class" of the engine's method, imported only for a run
    order: ClassVar[int] = 100  # place in listings (GET /v1/methods, the dashboard): the most wanted first
    uses_budget: ClassVar[bool] = True
    served: ClassVar[bool] = True  # offered by the service (jobs, estimates, GET /v1/methods, the dashboard)
    selects_blocks: ClassVar[bool] = False  # a warm-up chooses weight blocks (SMT): warm-up memory, /blocks
    trains_base: ClassVar[bool] = False  # every base weight trains (full): fp32 weights, their gradients
    reads_inputs: ClassVar[bool] = False  # a side path reads each target's input (LoRA, DoRA, SNELL)
    output_copies: ClassVar[int] = 0  # (tokens × out) tensors saved per target besides (DoRA: 2)
    # the default learning rates, here alone and torch-free: the engine's Method reads them from its spec, and
    # the API computes a job's rate before a run (OpenAI's learning_rate_multiplier multiplies it)
    default_learning_rate: ClassVar[float]  # measured here on models of ≤ 135M parameters (classification)
    # the small-model rate when the model learns text (a causal-LM loss: chat, prompt_completion,
    # multiple_choice) where it was measured to differ; None: default_learning_rate for every task
    causal_lm_learning_rate: ClassVar[float | None] = None
    large_model_learning_rate: ClassVar[float | None] = None  # the papers' rate on ~7B models

    def learning_rate_for(self, base_params: int, budget_params: int | None = None, *,
                          classification: bool) -> float:
        """The default learning rate for a base model of ``base_params`` parameters, a budget of
        ``budget_params`` trainable parameters (None: the default budget) and the task (a new classification
        head, or text): the measured small-model rate for the task, moving to the papers' 7B rate (see
        :func:`scaled_learning_rate`), times the factor for the budget (SMT's moves with it)."""
        small = self.default_learning_rate
        if not classification and self.causal_lm_learning_rate is not None:
            small = self.causal_lm_learning_rate
        return (scaled_learning_rate(small, self.large_model_learning_rate, base_params)
                * self.budget_rate_factor(base_params, budget_params))

    def budget_rate_factor(self, base_params: int, budget_params: int | None) -> float:
        """What the default rate is multiplied by for this budget: 1 for a method whose best rate does not
        move with its budget (the default)."""
        return 1.0

    def parse(self, options: dict[str, Any] | None, *, parse_strings: bool = False) -> MethodConfig:
        """The config for ``options`` (ConfigError naming the option)."""
        return self.config.from_options(options, parse_strings=parse_strings)

    def check_targets(self, geometry: Geometry) -> None:
        """Refuse a target set the method cannot adapt (ConfigError on ``targets``)."""

    def plan(self, geometry: Geometry, budget: int | None, config: MethodConfig) -> Plan:
        """What trains for ``budget`` (a count, see :func:`resolve_budget`); ConfigError on ``budget`` when
        the method's smallest unit does not fit it."""
        raise NotImplementedError

    def needs_budget(self, budget: int | None) -> int:
        if budget is None:
            raise ConfigError("budget", f"{self.name} needs a parameter budget")
        return budget

    def public(self) -> dict[str, Any]:
        """This method as ``GET /v1/methods`` lists it."""
        return {"id": self.name, "object": "method", "uses_budget": self.uses_budget,
                "options": [o.public() for o in self.config.options()]}


@dataclass
class NoOptions(MethodConfig):
    """The config of a method that has no options."""


class FixedSpec(MethodSpec):
    """A method without options that ignores the budget: the model alone decides what trains."""

    config = NoOptions
    uses_budget = False

    def trainable(self, geometry: Geometry) -> int:
        raise NotImplementedError

    def plan(self, geometry: Geometry, budget: int | None, config: MethodConfig) -> Plan:
        return Plan(self.trainable(geometry))
