"""The plain description of one training run: what the CLI parses and the worker builds from a job row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from smt_core import hyperparameters as hp
from smt_core.methods.options import ConfigError

LOGICAL_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
PRECISIONS = ("auto", "bf16", "fp32")  # TrainSpec.precision; the policy is smt_core/precision.py
DEFAULT_TARGETS = hp.TARGETS.default


@dataclass
class TrainSpec:
    """Everything the engine needs; no live objects, so it can cross a process boundary as JSON."""

    model: str  # local HF folder, hub id, or a packaged alias (smollm2-135m, minilm-l6)
    train_data: str  # JSONL path, one of the four formats
    method: str  # a registered method name: smt | snell | lora | dora | full
    out_dir: str
    # the hyperparameters: defaults, bounds and help in smt_core/hyperparameters.py
    budget: float | int | None = hp.BUDGET.default  # int >= 1: parameter count; float in (0, 1): fraction
    eval_data: str | None = None  # None: hold out ``holdout_fraction`` of the training rows (seeded)
    targets: list[str] = field(default_factory=lambda: list(hp.TARGETS.default))
    steps: int | None = hp.STEPS.default  # training steps; None: run ``epochs`` epochs
    epochs: float | None = hp.EPOCHS.default  # None with steps None: 1 epoch
    learning_rate: float | None = hp.LEARNING_RATE.default  # None: the method's default
    batch_size: int = hp.BATCH_SIZE.default  # global: every device takes an equal share
    max_seq_len: int = hp.MAX_SEQ_LEN.default
    lr_warmup_steps: int = hp.LR_WARMUP_STEPS.default
    head_learning_rate: float | None = hp.HEAD_LEARNING_RATE.default  # None: max(learning rate, 2e-3)
    weight_decay: float = hp.WEIGHT_DECAY.default
    method_options: dict[str, Any] = field(default_factory=dict)
    seed: int = hp.SEED.default
    resume: bool = False
    holdout_fraction: float = hp.HOLDOUT_FRACTION.default
    gradient_checkpointing: bool = hp.GRADIENT_CHECKPOINTING.default
    checkpoint_every: int = hp.CHECKPOINT_EVERY.default  # 0: never
    eval_every: int = hp.EVAL_EVERY.default  # 0: only at the end
    # micro-batches of batch_size rows per optimizer step (effective batch: batch_size × this)
    gradient_accumulation_steps: int = hp.GRADIENT_ACCUMULATION_STEPS.default
    metric_for_best: str | None = hp.METRIC_FOR_BEST.default  # eval_loss | eval_accuracy; None: keep the last only
    early_stopping_patience: int | None = hp.EARLY_STOPPING_PATIENCE.default  # None: never stop early
    max_eval_rows: int | None = hp.MAX_EVAL_ROWS.default  # cap evaluation cost on large eval sets
    device: str | None = None  # None: cuda if present, else cpu
    num_devices: int = hp.NUM_DEVICES.default  # data-parallel processes (one per GPU, or gloo CPU processes)
    # auto | bf16 | fp32 (smt_core/precision.py); None: $SPARSETUNE_PRECISION, else auto (bf16 on a GPU with
    # native bf16, fp32 elsewhere). bf16: frozen weights in bf16 and a bf16 autocast; trainable tensors fp32
    precision: str | None = None
    # continue a finished run: a local adapter folder (adapter.safetensors + its manifest) whose base model,
    # method, targets and budget this run shares; its tensors (and head) are the starting point, the optimizer
    # and the learning-rate schedule are this run's own (smt_core/lineage.py)
    init_from: str | None = None
    init_from_job: str | None = None  # the parent's job id, for the manifest's lineage (the worker sets it)

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
        for h in hp.ENGINE:  # types and bounds, as the API checks them
            h.check(getattr(self, h.name))
        bad_combination = hp.combination_error(self.to_dict())
        if bad_combination:
            raise ValueError(": ".join(bad_combination))
        if self.batch_size % self.num_devices:
            raise ValueError(f"batch_size: {self.batch_size} must be divisible by num_devices "
                             f"({self.num_devices}): each device takes an equal share of every batch")
        if "selection" in (self.method_options or {}) and not self.init_from:
            # SMT's ``selection`` chooses what a continued run does with its parent's blocks: nothing to choose
            raise ConfigError("selection", "only applies when continuing a finished run (init_from)")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
