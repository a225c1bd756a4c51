"""The plain description of one training run: what the CLI parses and the worker builds from a job row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LOGICAL_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
PRECISIONS = ("auto", "bf16", "fp32")  # TrainSpec.precision; the policy is smt_core/precision.py
DEFAULT_TARGETS = ("q", "k", "v")


@dataclass
class TrainSpec:
    """Everything the engine needs; no live objects, so it can cross a process boundary as JSON."""

    model: str  # local HF folder, hub id, or a packaged alias (smollm2-135m, minilm-l6)
    train_data: str  # JSONL path, one of the four formats
    method: str  # a registered method name: smt | snell | lora | dora | full
    out_dir: str
    budget: float | int | None = 0.01  # int >= 1: parameter count; float in (0, 1): fraction of the base
    eval_data: str | None = None  # None: hold out ``holdout_fraction`` of the training rows (seeded)
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    steps: int | None = None  # training steps; None: run ``epochs`` epochs
    epochs: float | None = None  # None with steps None: 1 epoch
    learning_rate: float | None = None  # None: the method's default
    batch_size: int = 8
    max_seq_len: int = 256
    lr_warmup_steps: int = 0
    head_learning_rate: float | None = None  # a new classification head; None: max(learning rate, 2e-3)
    weight_decay: float = 0.0
    method_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    resume: bool = False
    holdout_fraction: float = 0.1
    gradient_checkpointing: bool = False
    checkpoint_every: int = 50  # steps between resumable checkpoints (0: never)
    eval_every: int = 0  # steps between evaluations (0: only at the end)
    max_eval_rows: int | None = None  # cap evaluation cost on large eval sets
    device: str | None = None  # None: cuda if present, else cpu
    num_devices: int = 1  # data-parallel processes (one per GPU, or gloo CPU processes); batch_size is global
    # auto | bf16 | fp32 (smt_core/precision.py); None: $SPARSETUNE_PRECISION, else auto (bf16 on a GPU with
    # native bf16, fp32 elsewhere). bf16: frozen weights in bf16 and a bf16 autocast; trainable tensors fp32
    precision: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            self.targets = [t.strip() for t in self.targets.split(",") if t.strip()]
        bad = [t for t in self.targets if t not in LOGICAL_TARGETS]
        if bad or not self.targets:
            raise ValueError(f"targets: unknown {bad or 'empty list'}; expected names from {','.join(LOGICAL_TARGETS)}")
        if self.budget is not None:
            b = self.budget
            if isinstance(b, bool) or not isinstance(b, int | float):
                raise ValueError(f"budget: expected a number, got {b!r}")
            if isinstance(b, float) and b.is_integer() and b >= 1:
                self.budget = b = int(b)
            if isinstance(b, float) and not 0 < b < 1:
                raise ValueError(f"budget: a fraction must be in (0, 1), got {b}")
            if isinstance(b, int) and b < 1:
                raise ValueError(f"budget: a parameter count must be >= 1, got {b}")
        for name in ("batch_size", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps: must be >= 1, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs: must be > 0, got {self.epochs}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate: must be > 0, got {self.learning_rate}")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps: must be >= 0, got {self.lr_warmup_steps}")
        if isinstance(self.num_devices, bool) or not isinstance(self.num_devices, int) or self.num_devices < 1:
            raise ValueError(f"num_devices: must be an integer >= 1, got {self.num_devices!r}")
        if self.batch_size % self.num_devices:
            raise ValueError(f"batch_size: {self.batch_size} must be divisible by num_devices "
                             f"({self.num_devices}): each device takes an equal share of every batch")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction: must be in [0, 1), got {self.holdout_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
