"""A training run's hyperparameters, declared once: type, default, bounds and help.

Everything that takes a hyperparameter reads it here, so no copy of a default or a bound can drift:
:class:`smt_core.spec.TrainSpec` (its field defaults and checks), the engine's ``sparsetune train`` flags
(smt_core/cli.py), the service's ``sparsetune jobs create`` flags (cli/commands.py), the API's
``Hyperparameters`` and ``JobCreate`` schemas and the estimate's query parameters (and, through the OpenAPI
document, the dashboard's defaults), the worker's spec building and the job's ``holdout_fraction``.

The bounds are the service's limits too (the hardening work set the upper ones), so the engine accepts what the
API accepts. Torch-free and framework-free: the API, the CLI and the worker import it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["integer", "number", "boolean", "budget", "targets", "choice"]


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter. ``default`` None means "decided at run time" (the help says how). ``budget`` and
    ``targets`` are checked by their own rules (smt_core.methods.spec.resolve_budget, smt_core.spec)."""

    name: str
    kind: Kind
    default: Any
    help: str
    minimum: int | float | None = None
    maximum: int | float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[str, ...] = ()  # kind "choice": the allowed names (None too where the default is None)

    @property
    def flag(self) -> str:
        """The command-line flag (``--max-seq-len``)."""
        return "--" + self.name.replace("_", "-")

    @property
    def python_type(self) -> type:
        """What a command-line value is parsed as."""
        return {"integer": int, "number": float, "boolean": bool}.get(self.kind, str)

    def bounds(self) -> dict[str, int | float]:
        """The bounds as pydantic's and FastAPI's keywords (``ge``/``gt``/``le``/``lt``)."""
        out: dict[str, int | float] = {}
        if self.minimum is not None:
            out["gt" if self.exclusive_minimum else "ge"] = self.minimum
        if self.maximum is not None:
            out["lt" if self.exclusive_maximum else "le"] = self.maximum
        return out

    def range_text(self) -> str:
        lo, hi = self.minimum, self.maximum
        if hi is None:
            return f"{'>' if self.exclusive_minimum else '>='} {lo}"
        if lo is None:
            return f"{'<' if self.exclusive_maximum else '<='} {hi}"
        return f"in {'(' if self.exclusive_minimum else '['}{lo}, {hi}{')' if self.exclusive_maximum else ']'}"

    def check(self, value: Any) -> None:
        """Raise ValueError naming the hyperparameter when ``value`` has the wrong type or is out of bounds."""
        if (value is None and self.default is None) or self.kind in ("budget", "targets"):
            return
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise ValueError(f"{self.name}: must be true or false, got {value!r}")
            return
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{self.name}: must be one of {', '.join(self.choices)}, got {value!r}")
            return
        integer = self.kind == "integer"
        ok = not isinstance(value, bool) and isinstance(value, int if integer else int | float)
        if not ok or not math.isfinite(value) or not self._in_range(value):
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{self.name}: must be {kind} {self.range_text()}, got {value!r}")

    def _in_range(self, v: int | float) -> bool:
        lo, hi = self.minimum, self.maximum
        if lo is not None and (v < lo or (self.exclusive_minimum and v == lo)):
            return False
        return hi is None or v < hi or (not self.exclusive_maximum and v == hi)

    def add_flag(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: Any = None) -> None:
        """Its command-line flag, typed and explained from here. ``default``: what an absent flag gives
        (``sparsetune train`` passes this definition's default; ``jobs create`` None, so the service applies
        its own); the help shows this definition's default either way."""
        if self.kind == "boolean":
            parser.add_argument(self.flag, action="store_true", default=default, help=self.help_text())
        elif self.kind == "targets":  # comma-separated on the command line
            parser.add_argument(self.flag, default=None if default is None else ",".join(default),
                                help=self.help_text())
        elif self.kind == "choice":
            parser.add_argument(self.flag, choices=self.choices, default=default, help=self.help_text())
        else:
            kind = number if self.kind == "budget" else self.python_type
            parser.add_argument(self.flag, type=kind, default=default, help=self.help_text())

    def help_text(self) -> str:
        """The help with the default, for a command-line flag."""
        if self.default is None or self.kind == "boolean":  # a boolean flag is off unless given
            return self.help
        shown = ",".join(self.default) if isinstance(self.default, tuple) else self.default
        return f"{self.help} (default {shown})"


def number(text: str) -> int | float:
    """A budget from the command line: an int stays a count, anything else is read as a float."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"budget: expected a number, got {text!r}") from None


MAX_STEPS = 10_000_000  # per job; the service's SPARSETUNE_MAX_STEPS lowers it further
DEFAULT_EPOCHS = 1.0  # neither steps nor epochs given: one pass over the training set

BUDGET = Hyperparameter("budget", "budget", 0.01, "int >= 1: a count of trainable parameters; float in (0, 1): a "
                        "fraction of the base model's parameters (full fine-tuning ignores it)")
TARGETS = Hyperparameter("targets", "targets", ("q", "k", "v"), "logical projections to adapt, from "
                         "q,k,v,o,gate,up,down (the same default for every method, so budgets compare)")
EPOCHS = Hyperparameter("epochs", "number", None, "passes over the training set, instead of steps (neither: 1 epoch)",
                        minimum=0, maximum=1000, exclusive_minimum=True)
STEPS = Hyperparameter("steps", "integer", None, "training steps, instead of epochs", minimum=1, maximum=MAX_STEPS)
LEARNING_RATE = Hyperparameter("learning_rate", "number", None, "peak learning rate (unset: the method's default)",
                               minimum=0, maximum=10, exclusive_minimum=True)
BATCH_SIZE = Hyperparameter("batch_size", "integer", 8, "rows per forward and backward pass, over all devices "
                            "(an optimizer step takes gradient_accumulation_steps of them)",
                            minimum=1, maximum=4096)
MAX_SEQ_LEN = Hyperparameter("max_seq_len", "integer", 256, "tokens per row; longer rows are truncated and counted",
                             minimum=8, maximum=131072)
LR_WARMUP_STEPS = Hyperparameter("lr_warmup_steps", "integer", 0, "steps of linear learning-rate warm-up",
                                 minimum=0, maximum=MAX_STEPS)
NUM_DEVICES = Hyperparameter("num_devices", "integer", 1, "data-parallel processes: one per GPU, or gloo processes "
                             "on a CPU; batch_size is global and must divide evenly", minimum=1, maximum=64)
GRADIENT_CHECKPOINTING = Hyperparameter("gradient_checkpointing", "boolean", False, "recompute activations in the "
                                        "backward pass: less memory, more time")
HEAD_LEARNING_RATE = Hyperparameter("head_learning_rate", "number", None, "a new classification head's learning "
                                    "rate (unset: max(learning rate, 2e-3))", minimum=0, maximum=10,
                                    exclusive_minimum=True)
WEIGHT_DECAY = Hyperparameter("weight_decay", "number", 0.0, "AdamW weight decay (on the trained delta)", minimum=0)
SEED = Hyperparameter("seed", "integer", 0, "seeds data order, the hold-out split and initialisation",
                      minimum=0, maximum=2**31 - 1)
HOLDOUT_FRACTION = Hyperparameter("holdout_fraction", "number", 0.1, "share of the training rows held out (seeded) "
                                  "for evaluation when no evaluation set is given", minimum=0, maximum=1,
                                  exclusive_maximum=True)
CHECKPOINT_EVERY = Hyperparameter("checkpoint_every", "integer", 50, "steps between resumable checkpoints (0: never)",
                                  minimum=0, maximum=MAX_STEPS)
EVAL_EVERY = Hyperparameter("eval_every", "integer", 0, "steps between evaluations (0: only at the end)",
                            minimum=0, maximum=MAX_STEPS)
GRADIENT_ACCUMULATION_STEPS = Hyperparameter(
    "gradient_accumulation_steps", "integer", 1, "micro-batches of batch_size rows per optimizer step: the "
    "effective batch is batch_size × this, at the activation memory of one batch_size batch",
    minimum=1, maximum=1024)
METRIC_FOR_BEST = Hyperparameter("metric_for_best", "choice", None, "keep the adapter of the best evaluation by "
                                 "this metric as adapter-best.safetensors, and serve and merge it (unset: the last)",
                                 choices=("eval_loss", "eval_accuracy"))
EARLY_STOPPING_PATIENCE = Hyperparameter("early_stopping_patience", "integer", None, "stop after this many "
                                         "evaluations without improving metric_for_best (needs metric_for_best and "
                                         "eval_every; unset: never stop early)", minimum=1, maximum=MAX_STEPS)
MAX_EVAL_ROWS = Hyperparameter("max_eval_rows", "integer", None, "evaluate at most this many rows (unset: all)",
                               minimum=1)

# a job's ``hyperparameters`` object in the API, in this order (the order its JSON keeps)
JOB = (EPOCHS, STEPS, LEARNING_RATE, BATCH_SIZE, MAX_SEQ_LEN, LR_WARMUP_STEPS, NUM_DEVICES, GRADIENT_CHECKPOINTING,
       GRADIENT_ACCUMULATION_STEPS, EVAL_EVERY, METRIC_FOR_BEST, EARLY_STOPPING_PATIENCE)
# every TrainSpec field declared here, checked by TrainSpec
ENGINE = (BUDGET, TARGETS, *JOB, HEAD_LEARNING_RATE, WEIGHT_DECAY, SEED, HOLDOUT_FRACTION, CHECKPOINT_EVERY,
          MAX_EVAL_ROWS)
BY_NAME = {h.name: h for h in ENGINE}


def job_values(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A job's stored ``hyperparameters`` with the defaults filled in for keys added after the row was written."""
    return {h.name: stored.get(h.name, h.default) for h in JOB}


def combination_error(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, why) for hyperparameters each valid alone that do not go together, else None. Shared by TrainSpec
    and the API, so a job the API accepts is one the engine runs: early stopping needs something to compare
    (``metric_for_best``) and evaluations during training to compare it at (``eval_every``)."""
    if values.get("early_stopping_patience") is None:
        return None
    if values.get("metric_for_best") is None:
        return "early_stopping_patience", "needs metric_for_best (eval_loss or eval_accuracy) to tell improvement"
    if not values.get("eval_every"):
        return "early_stopping_patience", "needs eval_every > 0: without evaluations during training it never stops"
    return None
