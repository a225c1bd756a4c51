"""Evaluation that chooses: which evaluation was the best by ``metric_for_best``, and whether to stop early.

The trainer asks :class:`Keeper` after every evaluation. A new best makes it write that moment's adapter as
``adapter-best.safetensors`` (the writer is the trainer's: it knows the manifest); ``early_stopping_patience``
evaluations in a row without a strict improvement stop the run. Its state travels in the resumable checkpoint
(with the best file beside it), so a resumed run chooses as if it had never stopped.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smt_core.artifacts import BEST

LOWER_IS_BETTER = {"eval_loss": True, "eval_accuracy": False}


@dataclass
class Keeper:
    """The best evaluation so far (its step and value) and the evaluations since it. ``metric`` None: nothing
    is chosen (the last adapter is the result, as before)."""

    metric: str | None
    patience: int | None
    write: Callable[[int, dict[str, Any]], None] | None = None  # (step, scores): save the adapter as the best
    value: float | None = None
    step: int | None = None
    since: int = 0  # evaluations since the best one

    def improves(self, value: Any) -> bool:
        """Strictly better than the best so far (a tie keeps the earlier, smaller-step adapter)."""
        if not isinstance(value, int | float) or not math.isfinite(value):
            return False
        if self.value is None:
            return True
        return value < self.value if LOWER_IS_BETTER[str(self.metric)] else value > self.value

    def observe(self, step: int, scores: dict[str, Any]) -> bool:
        """Record one evaluation; on a new best write its adapter. True when it was the new best."""
        if self.metric is None:
            return False
        value = scores.get(self.metric)
        if not self.improves(value):
            self.since += 1
            return False
        self.value, self.step, self.since = float(value), step, 0
        if self.write is not None:
            self.write(step, scores)
        return True

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.metric is not None and self.since >= self.patience

    def summary(self) -> dict[str, Any] | None:
        """What the run's metrics say of the choice: ``{"metric", "value", "step"}``, or None if none was kept."""
        if self.metric is None or self.step is None:
            return None
        return {"metric": self.metric, "value": self.value, "step": self.step}

    def state(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "step": self.step, "since": self.since}

    def resume(self, state: dict[str, Any] | None, checkpoint_dir: Path, out_dir: Path) -> None:
        """Take the state a checkpoint saved, and put its best adapter back in ``out_dir`` (a stale best from
        after that checkpoint is replaced: the resumed run may choose differently from then on)."""
        if not state or state.get("metric") != self.metric:
            return
        self.value, self.step, self.since = state.get("value"), state.get("step"), int(state.get("since") or 0)
        if self.step is not None and (checkpoint_dir / BEST).is_file():
            shutil.copyfile(checkpoint_dir / BEST, out_dir / BEST)
