"""What every fine-tuning method's engine provides, and the shared work (head handling, weight edits).

A method is a small package: ``config.py`` (its options and torch-free spec, see smt_core.methods.spec),
``model.py`` (this interface; ``layer.py`` where it injects layers) and ``__init__.py`` registering the spec.
The trainer only talks to this interface:

1. ``prepare(ctx)``       inject into the model (SMT also runs its selection warm-up here) → the model to train
2. ``trainable_parameters(model)``   what the optimizer sees (that is where sparse memory savings become real)
3. ``adapter_tensors(model)`` / ``adapter_info()``   what the artifact stores (safetensors + JSON manifest)
4. ``load(model, sites, tensors, info)``   re-inject a saved adapter into a fresh base model (resume, inference)
5. ``merge(model, sites, tensors, info)``  write the adapter into the base weights in place
6. ``disabled(model)``   a context in which the adapted model computes exactly what its base does
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from smt_core.callbacks import Callbacks
from smt_core.methods.options import MethodConfig
from smt_core.methods.spec import MethodSpec, Plan
from smt_core.targets import Site, geometry_of

if TYPE_CHECKING:
    from smt_core.serving import ServedAdapter

__all__ = ["Method", "MethodConfig", "PrepareContext", "WrappedLinear", "add_to_weight", "replace_module"]


@dataclass
class PrepareContext:
    """What a method may use while preparing: the data (for warm-ups), the loss, and the callbacks."""

    model: nn.Module
    sites: list[Site]
    budget: int | None  # resolved parameter count (None for full)
    base_params: int
    device: torch.device
    callbacks: Callbacks = field(default_factory=Callbacks)
    # seeded training batches, one per optimizer step: hand each to ``loss_fn`` as it is (the trainer gives a
    # step's micro-batches, and its loss_fn backpropagates all but the last itself: gradient accumulation)
    batches: Callable[[], Iterator[Any]] | None = None
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None
    steps_per_epoch: int = 0
    total_steps: int = 0  # the job's training steps (0: unknown); SMT caps its warm-up to a share of them
    head_parameters: list[nn.Parameter] = field(default_factory=list)  # a new classification head


class Method(ABC):
    """One fine-tuning method's engine. Subclasses set ``spec`` (their torch-free description, which gives
    ``name``, ``config_class``, ``uses_budget`` and the default learning rates) and fill in the abstract
    methods."""

    spec: ClassVar[MethodSpec]
    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    uses_budget: ClassVar[bool] = True
    prepare_phase: ClassVar[str] = "training"  # the job phase shown while prepare() runs
    sparse_delta: ClassVar[bool] = False  # sparse_deltas() gives the delta (a SHiRA export can hold it)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "spec" in cls.__dict__:
            cls.name, cls.config_class, cls.uses_budget = cls.spec.name, cls.spec.config, cls.spec.uses_budget

    def __init__(self, config: MethodConfig) -> None:
        self.config = config

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> Method:
        return cls(cls.config_class.from_options(options))

    def plan(self, sites: list[Site], budget: int | None, base_params: int = 0) -> Plan:
        """The spec's arithmetic on these sites (the estimate runs the same on a config.json's shapes)."""
        geometry = geometry_of(sites, base_params)
        self.spec.check_targets(geometry)
        return self.spec.plan(geometry, budget, self.config)

    @classmethod
    def learning_rate_for(cls, base_params: int, budget_params: int | None = None, *,
                          classification: bool) -> float:
        """The default learning rate (the spec's :meth:`MethodSpec.learning_rate_for`)."""
        return cls.spec.learning_rate_for(base_params, budget_params, classification=classification)

    @abstractmethod
    def prepare(self, ctx: PrepareContext) -> nn.Module:
        """Inject the method into ``ctx.model``; return the module to train (may be a wrapper)."""

    @abstractmethod
    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The method's own trainable parameters (a classification head is added by the trainer)."""

    @abstractmethod
    def adapter_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Tensors for ``adapter.safetensors`` (contiguous, CPU), keyed by module name + tensor name."""

    @abstractmethod
    def adapter_info(self) -> dict[str, Any]:
        """JSON-serialisable method section of the manifest (options and what a load needs)."""

    @abstractmethod
    def load(self, model: nn.Module, sites: list[Site], tensors: dict[str, torch.Tensor],
             info: dict[str, Any]) -> nn.Module:
        """Re-inject a saved adapter into a fresh base model; returns the adapted model."""

    @abstractmethod
    def merge(self, model: nn.Module, sites: list[Site], tensors: dict[str, torch.Tensor],
              info: dict[str, Any]) -> None:
        """Write a saved adapter into the base model's weights in place."""

    def prepare_from(self, ctx: PrepareContext, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> nn.Module:
        """Continue a finished run (``init_from``): the model to train starts as the parent's adapted model.
        Why a hook of its own: most methods just load the parent's tensors as trainable ones (this default),
        but SMT may choose its blocks again (``selection: fresh``)."""
        return self.load(ctx.model, ctx.sites, tensors, info)

    @contextmanager
    def disabled(self, model: nn.Module) -> Iterator[None]:
        """Inside the block the adapted ``model`` gives exactly its base model's outputs; leaving it switches
        the adapter back on. Why: comparing a fine-tune with its base on the same inputs needs no second copy
        of the model (PEFT's ``disable_adapter``). This default serves methods whose layers are
        :class:`WrappedLinear` (their forward runs the frozen base alone while ``disabled`` is set); a method
        that adapts the model otherwise overrides it."""
        layers = [m for m in model.modules() if isinstance(m, WrappedLinear)]
        before = [m.disabled for m in layers]
        try:
            for layer in layers:
                layer.disabled = True
            yield
        finally:
            for layer, flag in zip(layers, before, strict=True):
                layer.disabled = flag

    def sparse_deltas(self, model: nn.Module, sites: list[Site], tensors: dict[str, torch.Tensor],
                      info: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        """Per physical module name: (indices int64 [2, nnz] in (out, in) orientation, values) — the
        delta as a sparse matrix, for the SHiRA export. None when the method's delta is not sparse."""
        return None

    def served_adapter(self, name: str, sites: list[Site], tensors: dict[str, torch.Tensor],
                       info: dict[str, Any], targets: list[str]) -> ServedAdapter:
        """How the inference process puts this saved adapter on a base model it shares with others
        (smt_core.serving): a sparse delta is written in place and restored; without one the adapter runs
        on a merged copy of the base of its own. ``sites`` are the host's target modules."""
        from smt_core.serving import InPlaceDelta, OwnModel, entry_patches

        deltas = self.sparse_deltas(None, sites, tensors, info)  # type: ignore[arg-type]
        if deltas is not None:
            return InPlaceDelta(entry_patches(deltas), targets)

        def merge(model: nn.Module) -> None:
            from smt_core.targets import find_sites

            self.merge(model, find_sites(model, targets), tensors, info)

        return OwnModel(merge)

    def report(self, model: nn.Module) -> dict[str, Any]:
        """Figures for metrics: trainable params and, for sparse methods, ΔW nonzeros."""
        n = sum(p.numel() for p in self.trainable_parameters(model))
        return {"trainable_params": n, "delta_nonzeros": n}

    def blocks_report(self) -> dict[str, Any] | None:
        """SMT's chosen blocks in the /v1/jobs/{id}/blocks shape; None for other methods."""
        return None


class WrappedLinear(nn.Module):
    """Base of a method's layer that wraps a frozen ``nn.Linear`` or GPT-2 ``Conv1D`` (kept as ``base``).

    Model code sometimes inspects ``proj.weight`` (dtype, device), so the frozen weight and bias show through.
    While ``disabled`` is set (:meth:`Method.disabled`) a subclass's forward returns ``self.base(x)`` alone.
    """

    def __init__(self, base: nn.Module, transposed: bool | None = None) -> None:
        super().__init__()
        self.base = base
        self.disabled = False
        # GPT-2's Conv1D stores its weight (in, out)
        self.transposed = type(base).__name__ == "Conv1D" if transposed is None else transposed

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def weight_out_in(self) -> torch.Tensor:
        """The frozen weight in (out, in) orientation (a view: Conv1D stores (in, out))."""
        return self.base.weight.t() if self.transposed else self.base.weight


def add_to_weight(site: Site, part_row0: int, delta: torch.Tensor, col0: int = 0) -> None:
    """Add a dense (rows, cols) delta in the logical (out, in) orientation into a site's frozen weight."""
    w = site.weight_out_in()
    rows, cols = delta.shape
    with torch.no_grad():
        region = w[part_row0:part_row0 + rows, col0:col0 + cols]
        # summed in fp32 and rounded once (a bf16 base would round the delta itself first), on w's device
        region.copy_((region.float() + delta.to(device=w.device, dtype=torch.float32)).to(w.dtype))


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule called ``name`` was."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
