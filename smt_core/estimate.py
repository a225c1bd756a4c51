"""Trainable parameters and training memory from a model's config.json alone: arithmetic, no model load.

The service shows these before a job is launched (``GET /v1/models/{id}/estimate``) and checks budgets
against them; the engine reports the real figures of every run. Torch-free on purpose.
Memory is in bytes for fp32 weights and AdamW (two moments per trainable parameter).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METHODS = ("smt", "snell", "lora", "dora", "full")
# method -> option -> expected type (or allowed values); the API refuses anything else
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "smt": {"block_size": int, "selection_steps": int, "score": ("mean_abs_sum", "abs_mean", "l1", "l2"),
            "pools": ("global", "attention_mlp"), "head_steps": int},
    "snell": {"sparsity": float, "rule": ("released", "paper"), "learn_coefficients": bool},
    "lora": {"alpha": float, "dropout": float},
    "dora": {"alpha": float, "dropout": float},
    "full": {},
}  # kept equal to the engine's option dataclasses by tests/core/test_registry.py
FP32 = 4


@dataclass
class ModelShape:
    architecture: str
    hidden: int
    layers: int
    vocab: int
    total_params: int
    targets: dict[str, tuple[int, int]] = field(default_factory=dict)  # logical target -> (out, in) per layer
    causal: bool = True


def load_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    return json.loads(path.read_text())


def model_shape(cfg: dict[str, Any]) -> ModelShape:
    """Parameter count and projection shapes for the LLaMA, BERT and GPT-2 families (tied weights once)."""
    mtype = cfg.get("model_type", "")
    arch = (cfg.get("architectures") or [mtype])[0]
    if mtype == "gpt2":
        h, n, v, pos = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"], cfg.get("n_positions", 1024)
        inner = cfg.get("n_inner") or 4 * h
        per_layer = 4 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * inner + inner) + (inner * h + h)
        total = v * h + pos * h + n * per_layer + 2 * h
        t = {"q": (h, h), "k": (h, h), "v": (h, h), "o": (h, h), "up": (inner, h), "down": (h, inner)}
        return ModelShape(arch, h, n, v, total, t, True)
    if mtype in ("bert", "roberta", "distilbert", "xlm-roberta"):
        h, n, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
        inner, pos = cfg["intermediate_size"], cfg.get("max_position_embeddings", 512)
        types = cfg.get("type_vocab_size", 2)
        per_layer = 4 * (h * h + h) + 2 * h + (h * inner + inner) + (inner * h + h) + 2 * h
        total = v * h + pos * h + types * h + 2 * h + n * per_layer + (h * h + h)  # + pooler
        t = {"q": (h, h), "k": (h, h), "v": (h, h), "o": (h, h), "up": (inner, h), "down": (h, inner)}
        return ModelShape(arch, h, n, v, total, t, False)
    # LLaMA family (Mistral, Qwen2, OLMo, SmolLM …): separate projections, grouped K/V
    h, n, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or h // heads
    inner = cfg["intermediate_size"]
    bias = 1 if cfg.get("attention_bias") else 0
    qo, kvd = heads * hd, kv * hd
    attn = (h * qo + bias * qo) + 2 * (h * kvd + bias * kvd) + (qo * h + bias * h)
    per_layer = attn + 3 * h * inner + 2 * h
    head = 0 if cfg.get("tie_word_embeddings", True) else v * h
    total = v * h + n * per_layer + h + head
    t = {"q": (qo, h), "k": (kvd, h), "v": (kvd, h), "o": (h, qo), "gate": (inner, h), "up": (inner, h),
         "down": (h, inner)}
    return ModelShape(arch, h, n, v, total, t, True)


def budget_count(budget: float | int | None, total: int) -> int | None:
    """An int is a count; a float in (0, 1) is a fraction of the base model's parameters."""
    if budget is None:
        return None
    if isinstance(budget, float) and 0 < budget < 1:
        return max(1, int(budget * total))
    return int(budget)


def default_block_size(shape: ModelShape, targets: list[str]) -> int:
    """The largest power of two <= 256 dividing every targeted side (SMT's default)."""
    sides = [s for t in targets for s in shape.targets.get(t, ())]
    bs = 256
    while bs > 1 and any(s % bs for s in sides):
        bs //= 2
    return bs


def trainable_params(shape: ModelShape, method: str, budget: float | int | None, targets: list[str],
                     options: dict[str, Any] | None = None) -> int:
    options = options or {}
    mats = [shape.targets[t] for t in targets if t in shape.targets] * shape.layers
    capacity = sum(o * i for o, i in mats)
    if method == "full":
        return shape.total_params
    want = budget_count(budget, shape.total_params) or 1
    if method == "smt":
        bs = int(options.get("block_size") or default_block_size(shape, targets))
        blocks = max(1, want // (bs * bs))
        return min(blocks * bs * bs, capacity)
    per_rank = sum(o + i for o, i in mats)
    if method in ("lora", "dora"):  # the engine's arithmetic (METHODS.md §3)
        extra = sum(o for o, _ in mats) if method == "dora" else 0  # DoRA's magnitude vector
        rank = max(0, (want - extra) // max(per_rank, 1))
        return rank * per_rank + extra
    # snell: an even rank split in two halves; the factors are what trains
    rank = 2 * (want // (2 * max(per_rank, 1)))
    return rank * per_rank + (2 * len(mats) if options.get("learn_coefficients") else 0)


def memory(shape: ModelShape, trainable: int, batch_size: int, max_seq_len: int) -> dict[str, int]:
    """Bytes by component; activations are a rough per-layer sum of saved tensors for backprop."""
    tokens = batch_size * max_seq_len
    act = tokens * shape.hidden * shape.layers * 16 * FP32
    if shape.causal:
        act += tokens * shape.vocab * FP32 * 2  # logits and their gradient
    parts = {"weights": shape.total_params * FP32, "trainable": trainable * FP32, "gradients": trainable * FP32,
             "optimizer": 2 * trainable * FP32, "activations": act}
    parts["peak"] = parts["weights"] + parts["gradients"] + parts["optimizer"] + parts["activations"]
    return parts


def estimate(cfg: dict[str, Any], method: str, budget: float | int | None, targets: list[str] | None = None,
             batch_size: int = 8, max_seq_len: int = 256, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the dashboard shows before launch: trainable and total params, memory by component."""
    shape = model_shape(cfg)
    targets = list(targets or ["q", "k", "v"])
    n = trainable_params(shape, method, budget, targets, options)
    return {"method": method, "budget": budget, "targets": targets, "trainable_params": n,
            "total_params": shape.total_params, "memory": memory(shape, n, batch_size, max_seq_len),
            "estimated": True}
