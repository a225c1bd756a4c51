"""Serving saved adapters on one shared copy of a base model: each method says how its adapter is put on.

A sparse delta (SMT's blocks, SNELL's entries) is about 1% of the model, so :class:`InPlaceDelta` writes it
into the base weights when its adapter's turn comes and puts the saved entries back afterwards — one copy of
the base serves every fine-tune at the base model's own speed, with no side path on each forward. Restoring
copies the saved entries back (subtracting the delta would not be exact in floating point), so the base is
bit-identical after any number of swaps. PEFT adapters (:class:`PeftAdapter`) are named adapters on the shared
base, switched with PEFT's own ``set_adapter``; anything else (``full``) runs on a model of its own
(:class:`OwnModel`). :meth:`smt_core.base.Method.served_adapter` picks one per method: the engine never
branches on a method's name.

On a bf16 base, ``bf16(W + Δ)`` can round small updates away. Where the rounding loses more than
``PRECISION_TOLERANCE`` of a module's delta (relative norm), the module keeps what rounding lost in fp32 and
adds it back on each forward (``x @ residualᵀ`` on the touched entries only), so the touched blocks compute
in higher precision.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from smt_core.targets import Site

PRECISION_TOLERANCE = 1e-2  # relative norm of the delta that rounding into the base may lose


class Host(ABC):
    """What an adapter is put on: a loaded base model that many adapters share."""

    model: nn.Module  # the Hugging Face model (PEFT layers may sit inside once a PEFT adapter is attached)
    peft_model: Any = None  # the PeftModel wrapping ``model``, made by the first PEFT adapter

    @abstractmethod
    def sites(self, targets: list[str]) -> list[Site]:
        """The target modules (PEFT layers seen through to their base layer)."""

    @abstractmethod
    def fresh_model(self) -> nn.Module:
        """A new copy of the base model (for adapters that cannot share it)."""


class ServedAdapter(ABC):
    """One adapter ready to serve. ``attach`` once when loaded, then ``activate``/``deactivate`` around the
    steps that run it (the host runs one adapter at a time), ``detach`` when evicted."""

    nbytes: int = 0  # memory the adapter holds besides the base

    def attach(self, host: Host) -> None:
        """Prepare on ``host`` (check shapes, register PEFT weights)."""
        return None

    @abstractmethod
    def activate(self, host: Host) -> nn.Module:
        """Switch the adapter on; returns the module to run."""

    @abstractmethod
    def deactivate(self, host: Host) -> None:
        """Switch it off: the host computes its base model again (bit-identical weights)."""

    def detach(self, host: Host) -> None:
        """Forget it on ``host`` (evicted)."""
        return None


# ---- sparse deltas written in place ----------------------------------------------------------------------
@dataclass
class Patch:
    """Part of one module's delta in the (out, in) orientation: a dense block at (row0, col0), or entries at
    (rows, cols) when ``rows`` is given (then ``values`` is flat)."""

    values: torch.Tensor  # fp32: (h, w) for a block, (nnz,) for entries
    row0: int = 0
    col0: int = 0
    rows: torch.Tensor | None = None  # int32 (nnz,)
    cols: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        extra = 0 if self.rows is None else self.rows.nbytes + self.cols.nbytes
        return self.values.nbytes + extra

    def region(self, w: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], None]]:
        """The current entries (a copy) and a writer for new ones."""
        if self.rows is None:
            h, wd = self.values.shape
            view = w[self.row0:self.row0 + h, self.col0:self.col0 + wd]
            return view.clone(), view.copy_
        r, c = self.rows.long(), self.cols.long()

        def write(new: torch.Tensor) -> None:
            w[r, c] = new

        return w[r, c], write

    def restore(self, w: torch.Tensor, old: torch.Tensor) -> None:
        """Put the saved entries back (a copy, never a subtraction: bit-identical)."""
        if self.rows is None:
            h, wd = self.values.shape
            w[self.row0:self.row0 + h, self.col0:self.col0 + wd].copy_(old)
        else:
            w[self.rows.long(), self.cols.long()] = old


def coalesce(blocks: list[Patch]) -> list[Patch]:
    """Adjacent blocks of one module merged into larger rectangles: side by side in a row band first, then
    bands stacked with the same columns. A swap costs a few tensor operations per patch, so SMT's 64×64
    blocks (hundreds per model) swap several times faster as a few dozen rectangles."""
    def merge(patches: list[Patch], along: int) -> list[Patch]:
        key = (lambda p: (p.row0, p.values.shape[0], p.col0)) if along == 1 else (
            lambda p: (p.col0, p.values.shape[1], p.row0))
        out: list[Patch] = []
        for p in sorted(patches, key=key):
            last = out[-1] if out else None
            if last is not None and along == 1 and (last.row0, last.values.shape[0]) == (p.row0, p.values.shape[0]) \
                    and last.col0 + last.values.shape[1] == p.col0:
                last.values = torch.cat([last.values, p.values], dim=1)
            elif last is not None and along == 0 and (last.col0, last.values.shape[1]) == (p.col0, p.values.shape[1]) \
                    and last.row0 + last.values.shape[0] == p.row0:
                last.values = torch.cat([last.values, p.values], dim=0)
            else:
                out.append(Patch(p.values, p.row0, p.col0))
        return out

    return merge(merge(blocks, 1), 0)


@dataclass
class _Active:
    saved: list[tuple[torch.Tensor, Patch, torch.Tensor]] = field(default_factory=list)  # (weight, patch, old)
    hooks: list[Any] = field(default_factory=list)


class InPlaceDelta(ServedAdapter):
    """A sparse delta per module name, written into the shared base while active (see the module docstring)."""

    def __init__(self, patches: dict[str, list[Patch]], targets: list[str]) -> None:
        self.patches, self.targets = patches, targets
        self.nbytes = sum(p.nbytes for ps in patches.values() for p in ps)
        self._sites: dict[str, Site] = {}
        self._active: _Active | None = None
        self.max_rounding_error = 0.0  # worst module's relative loss when last activated

    def attach(self, host: Host) -> None:
        sites = {s.name: s for s in host.sites(self.targets)}
        missing = sorted(set(self.patches) - set(sites))
        if missing:
            raise ValueError(f"adapter: modules {missing[:3]} are not in this base model")
        self._sites = {name: sites[name] for name in self.patches}
        for name, patches in self.patches.items():
            w = self._sites[name].weight_out_in()
            for p in patches:
                if p.rows is None and (p.row0 + p.values.shape[0] > w.shape[0] or p.col0 + p.values.shape[1] > w.shape[1]):
                    raise ValueError(f"adapter: a block of {name} lies outside its {tuple(w.shape)} weight")
            for p in patches:  # on the base's device once, not on every swap
                p.values = p.values.to(w.device, torch.float32)
                if p.rows is not None:
                    p.rows, p.cols = p.rows.to(w.device), p.cols.to(w.device)

    def activate(self, host: Host) -> nn.Module:
        assert self._active is None, "adapter is already active"
        active, worst = _Active(), 0.0
        with torch.no_grad():
            for name, patches in self.patches.items():
                site = self._sites[name]
                w = site.weight_out_in()
                residuals = []
                for p in patches:
                    if p.rows is None and w.dtype == torch.float32:  # the same bits as old + values, in place
                        view = w[p.row0:p.row0 + p.values.shape[0], p.col0:p.col0 + p.values.shape[1]]
                        active.saved.append((w, p, view.clone()))
                        view.add_(p.values)
                        continue
                    old, rounding = write_merged(p, w)
                    active.saved.append((w, p, old))
                    if rounding is not None:
                        residuals.append((p, rounding))
                if residuals:
                    lost = sum(float(r.square().sum()) for _, r in residuals) ** 0.5
                    norm = sum(float(p.values.square().sum()) for p in patches) ** 0.5
                    error = lost / max(norm, 1e-30)
                    worst = max(worst, error)
                    if error > PRECISION_TOLERANCE:
                        active.hooks.append(site.module.register_forward_hook(_residual_hook(site, residuals)))
        self._active, self.max_rounding_error = active, worst
        return host.model

    def deactivate(self, host: Host) -> None:
        if self._active is None:
            return
        with torch.no_grad():
            for handle in self._active.hooks:
                handle.remove()
            for w, p, old in reversed(self._active.saved):  # overlapping patches unwind in reverse
                p.restore(w, old)
        self._active = None


def write_merged(p: Patch, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Write old + Δ into ``w`` in its own dtype; returns (the old entries, what rounding to that dtype lost,
    fp32 — None when ``w`` is fp32 itself)."""
    old, write = p.region(w)
    merged = old.float() + p.values
    write(merged.to(w.dtype))
    return old, None if w.dtype == torch.float32 else merged - merged.to(w.dtype).float()


def _residual_hook(site: Site, residuals: list[tuple[Patch, torch.Tensor]]):
    """A forward hook adding ``x @ residualᵀ`` for the entries rounding changed (fp32, touched entries only)."""

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        x = args[0].float()
        extra = torch.zeros(*out.shape[:-1], site.out_features, dtype=torch.float32, device=out.device)
        for p, r in residuals:
            if p.rows is None:
                h, w = r.shape
                extra[..., p.row0:p.row0 + h] += x[..., p.col0:p.col0 + w] @ r.t()
            else:
                dense = torch.zeros(site.out_features, site.in_features, dtype=torch.float32, device=out.device)
                dense[p.rows.long(), p.cols.long()] = r
                extra += x @ dense.t()
        return out + extra.to(out.dtype)

    return hook


def entry_patches(deltas: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, list[Patch]]:
    """``Method.sparse_deltas`` (indices [2, nnz] in (out, in), values) as entry patches (int32 indices)."""
    return {name: [Patch(values.float().contiguous(), rows=idx[0].to(torch.int32).contiguous(),
                         cols=idx[1].to(torch.int32).contiguous())]
            for name, (idx, values) in deltas.items()}


# ---- PEFT adapters and models of their own ----------------------------------------------------------------
class PeftAdapter(ServedAdapter):
    """A LoRA/DoRA adapter as a named PEFT adapter on the shared base; PEFT's layers are switched off while
    another adapter (or the base) runs."""

    def __init__(self, name: str, config: Any, tensors: dict[str, torch.Tensor]) -> None:
        self.name, self.config, self.tensors = name, config, tensors
        self.nbytes = sum(t.nbytes for t in tensors.values())

    def attach(self, host: Host) -> None:
        from peft import PeftModel, set_peft_model_state_dict

        if host.peft_model is None:
            host.peft_model = PeftModel(host.model, self.config, adapter_name=self.name)
        else:
            host.peft_model.add_adapter(self.name, self.config)
        result = set_peft_model_state_dict(host.peft_model, self.tensors, adapter_name=self.name)
        bad = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if bad:
            raise ValueError(f"adapter: tensors {bad[:3]} do not fit this model")
        self.tensors = {}  # PEFT holds them now
        host.peft_model.eval()
        host.peft_model.base_model.disable_adapter_layers()

    def activate(self, host: Host) -> nn.Module:
        host.peft_model.base_model.enable_adapter_layers()
        host.peft_model.base_model.set_adapter(self.name)
        return host.peft_model

    def deactivate(self, host: Host) -> None:
        host.peft_model.base_model.disable_adapter_layers()

    def detach(self, host: Host) -> None:
        if host.peft_model is not None:
            host.peft_model.base_model.delete_adapter(self.name)


class OwnModel(ServedAdapter):
    """An adapter that cannot share the base (``full``): a copy of the base with the adapter merged in."""

    def __init__(self, merge: Callable[[nn.Module], None]) -> None:
        self._merge = merge
        self.model: nn.Module | None = None

    def attach(self, host: Host) -> None:
        model = host.fresh_model()
        self._merge(model)
        model.eval()
        self.model = model
        self.nbytes = sum(p.nbytes for p in model.parameters())

    def activate(self, host: Host) -> nn.Module:
        assert self.model is not None
        return self.model

    def deactivate(self, host: Host) -> None:
        pass

    def detach(self, host: Host) -> None:
        self.model = None
