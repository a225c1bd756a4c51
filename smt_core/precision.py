"""Which numeric precision a run trains in: one explicit policy instead of a device check in the loop.

- ``bf16``: frozen weights stored in bf16 (half the memory) and the forward under ``torch.autocast`` with
  bf16; trainable tensors (SMT blocks, SNELL/LoRA factors, a new head, full fine-tuning's weights) stay fp32
  so small AdamW updates are not rounded away.
- ``fp32``: everything in fp32, no autocast.
- ``auto`` (the default): bf16 on a CUDA device with native bf16 (compute capability 8.0+: A100, H100 …),
  fp32 otherwise. A GPU without bf16 (V100, T4) falls back to fp32 rather than fp16: fp16 would need a loss
  scaler and its range loses small gradients; fp32 is slower but always right. The run says so in an
  ``on_log`` warning, and the manifest and metrics name the precision that ran.

The choice comes from ``TrainSpec.precision`` (the CLI's ``--precision``), else ``$SPARSETUNE_PRECISION``
(how a worker or a test asks for it without a field in the REST API), else ``auto``. bf16 also works on the
CPU (``torch.autocast("cpu", bfloat16)``): that is how CI runs the GPU policy without a GPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from smt_core.spec import PRECISIONS

ENV = "SPARSETUNE_PRECISION"


def check(name: str | None, field: str = "precision") -> str | None:
    """``name`` if it is a known precision (or None); a ValueError naming the field otherwise."""
    if name is not None and name not in PRECISIONS:
        raise ValueError(f"{field}: must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def requested(name: str | None = None) -> str:
    """The precision asked for: ``name``, else $SPARSETUNE_PRECISION, else auto."""
    env = os.environ.get(ENV) or None
    return check(name) or check(env, ENV) or "auto"


def native_bf16(device: torch.device) -> bool:
    """True on a device that runs bf16 in hardware: the CPU (autocast works everywhere, emulated or not,
    and it is only asked for explicitly there), ROCm, or CUDA compute capability 8.0 and later."""
    if device.type != "cuda":
        return device.type == "cpu"
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


@dataclass(frozen=True)
class Precision:
    """The policy one run uses; ``name`` is what ran ("bf16" | "fp32"), ``warning`` why it differs from
    what was asked (None when it does not)."""

    name: str
    requested: str
    device_type: str
    warning: str | None = None

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    def frozen_dtype(self, trains_base_weights: bool) -> torch.dtype:
        """bf16 for frozen weights under bf16 — unless the method trains the base weights themselves
        (full fine-tuning): AdamW on bf16 weights loses updates below bf16's resolution."""
        return torch.bfloat16 if self.bf16 and not trains_base_weights else torch.float32

    def autocast(self) -> Callable[[], AbstractContextManager]:
        """A factory of fresh autocast contexts (one per forward), or of null contexts under fp32."""
        if not self.bf16:
            return contextlib.nullcontext
        device_type = self.device_type
        return lambda: torch.autocast(device_type, dtype=torch.bfloat16)


def resolve(name: str | None, device: torch.device) -> Precision:
    """The policy for ``device`` given what was asked (see the module docstring)."""
    asked = requested(name)
    if asked == "fp32" or (asked == "auto" and device.type != "cuda"):
        return Precision("fp32", asked, device.type)
    if native_bf16(device):
        return Precision("bf16", asked, device.type)
    gpu = torch.cuda.get_device_name(device)
    return Precision("fp32", asked, device.type,
                     f"precision: {gpu} has no native bf16 (compute capability < 8.0); training in fp32 "
                     "instead (slower, more memory for frozen weights)")
