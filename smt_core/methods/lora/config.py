"""LoRA / DoRA options (INTERFACE.md: ``alpha``, ``dropout``)."""

from __future__ import annotations

from dataclasses import dataclass

from smt_core.base import MethodConfig


@dataclass
class LoraOptions(MethodConfig):
    """Options for PEFT's LoRA (and DoRA, which is ``LoraConfig(use_dora=True)``)."""

    alpha: float | None = None
    """Scaling numerator; default 2·rank (scale 2), the common choice that keeps the update's size steady
    as the budget changes the rank."""
    dropout: float = 0.0
    """Dropout on the adapter's input; 0 by default (short runs, small data: dropout only slows them)."""

    def __post_init__(self) -> None:
        if self.alpha is not None and (not isinstance(self.alpha, int | float) or self.alpha <= 0):
            raise ValueError(f"alpha: must be a positive number, got {self.alpha!r}")
        if not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout!r}")
