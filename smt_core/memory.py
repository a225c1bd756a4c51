"""Training memory by component, measured rather than estimated.

- weights / trainable: bytes of frozen and trainable parameter storages (each storage once; tied weights once)
- gradients: bytes of ``.grad`` tensors after backward; optimizer: bytes of the optimizer's state tensors
- activations: bytes saved for backward during one forward, seen through
  ``torch.autograd.graph.saved_tensors_hooks`` — parameters skipped, each storage counted once
- peak: ``torch.cuda.max_memory_allocated`` on GPU, the process's peak RSS on CPU
"""

from __future__ import annotations

import resource
import sys
from contextlib import contextmanager

import torch
from torch import nn


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def param_bytes(model: nn.Module) -> tuple[int, int]:
    """(frozen bytes, trainable bytes), each storage counted once."""
    seen: set[int] = set()
    frozen = trainable = 0
    for p in model.parameters():
        key = _storage_key(p)
        if key in seen:
            continue
        seen.add(key)
        n = p.untyped_storage().nbytes()
        if p.requires_grad:
            trainable += n
        else:
            frozen += n
    return frozen, trainable


def grad_bytes(params: list[nn.Parameter]) -> int:
    return sum(p.grad.untyped_storage().nbytes() for p in params if p.grad is not None)


def optimizer_bytes(opt: torch.optim.Optimizer) -> int:
    seen: set[int] = set()
    total = 0
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor) and _storage_key(v) not in seen:
                seen.add(_storage_key(v))
                total += v.untyped_storage().nbytes()
    return total


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


class ActivationMeter:
    """Counts bytes saved for backward inside ``track()``; each storage once, parameters skipped."""

    def __init__(self, model: nn.Module) -> None:
        self.param_storages = {_storage_key(p) for p in model.parameters()}
        self.last = 0
        self.max = 0

    @contextmanager
    def track(self):
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            key = _storage_key(t)
            if key not in self.param_storages and key not in seen:
                seen[key] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
        self.last = sum(seen.values())
        self.max = max(self.max, self.last)


def snapshot(model: nn.Module, params: list[nn.Parameter], opt: torch.optim.Optimizer | None,
             activations: int, device: torch.device, gradients: int | None = None) -> dict[str, int]:
    frozen, trainable = param_bytes(model)
    return {
        "weights": frozen,
        "trainable": trainable,
        "gradients": grad_bytes(params) if gradients is None else gradients,
        "optimizer": optimizer_bytes(opt) if opt is not None else 0,
        "activations": activations,
        "peak": peak_bytes(device),
    }
