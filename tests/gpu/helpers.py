"""What the CUDA tests share: the devices they run on, and tiny random LLaMA / GPT-2 / BERT folders built
from configs and the tokenizers in ``tests/assets``.

Nothing here reads a packaged model: the GPU machine sees only the repository. GPT-2 uses SmolLM2's
tokenizer, itself a GPT-2-style byte-level BPE, so no third tokenizer needs committing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from tests import factories

ON_CPU_ENV = "SPARSETUNE_GPU_TESTS_ON_CPU"
# cuda where there is one; the CPU too when asked (the same tests, the same bf16 policy, no GPU needed)
DEVICES = (["cuda"] if torch.cuda.is_available() else []) + (["cpu"] if os.environ.get(ON_CPU_ENV) == "1" else [])
needs_device = pytest.mark.skipif(not DEVICES, reason=f"no CUDA device (set {ON_CPU_ENV}=1 to run on the CPU)")

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TOKENIZERS = {"llama": ASSETS / "smollm2-tokenizer", "gpt2": ASSETS / "smollm2-tokenizer",
              "bert": ASSETS / "minilm-tokenizer"}
ARCHS = tuple(TOKENIZERS)


def copy_tokenizer(arch: str, out: Path) -> None:
    """The committed tokenizer files, unchanged, beside the model (what resolve_model's folder needs)."""
    for f in TOKENIZERS[arch].iterdir():
        if f.is_file() and f.name != "README.md":
            shutil.copy(f, out / f.name)


def build(out: Path, arch: str, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a random ``arch`` model (safetensors) and its tokenizer to ``out``."""
    import transformers as hf

    torch.manual_seed(seed)
    tok = hf.AutoTokenizer.from_pretrained(str(TOKENIZERS[arch]))
    ids = {"pad_token_id": tok.pad_token_id}
    if arch == "llama":
        cfg = hf.LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, **ids)
        model = hf.AutoModelForCausalLM.from_config(cfg)
    elif arch == "gpt2":  # default dropout 0.1: resume must restore the RNG to match
        cfg = hf.GPT2Config(vocab_size=len(tok), n_embd=hidden, n_layer=layers, n_head=4, n_positions=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **ids)
        model = hf.AutoModelForCausalLM.from_config(cfg)
    elif arch == "bert":
        cfg = hf.BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                         intermediate_size=2 * hidden, max_position_embeddings=512, **ids)
        model = hf.AutoModel.from_config(cfg)
    else:
        raise ValueError(f"arch: expected one of {ARCHS}, got {arch!r}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    copy_tokenizer(arch, out)
    return out


# ---- one training configuration for every test ------------------------------------------------------
BUDGET = 3000
STEPS = 6
CHECKPOINT_EVERY = 2
RATES = {"full": 1e-3}  # else 1e-2: six steps must move the model; full fine-tuning at 1e-2 overshoots
OPTIONS = {"smt": {"selection_steps": 2, "block_size": 16, "head_steps": 2}, "snell": {"sparsity": 0.9}}
METHODS = tuple(factories.METHODS)


def cases(methods=METHODS, archs=None) -> list:
    """(method, arch) parameters, each in the xdist group of its cached run: under ``pytest -n N
    --dist loadgroup`` (scripts/gpu_check.py on a GPU) every test of one run lands in one process."""
    return [pytest.param(m, a, marks=pytest.mark.xdist_group(f"{m}-{a}"), id=f"{m}-{a}")
            for m in methods for a in (archs or ARCHS)]


def rows_for(arch: str, n: int = 48) -> list[dict]:
    return factories.classification_rows(n) if arch == "bert" else factories.completion_rows(n)


def spec_for(device: str, method: str, model_dir: Path, data: Path, out: Path, resume: bool = False):
    """The run every test trains: the default precision on a GPU (auto: bf16 where native), bf16 on the
    CPU (the GPU policy, run where there is no GPU)."""
    from smt_core import TrainSpec

    return TrainSpec(model=str(model_dir), train_data=str(data), method=method, budget=BUDGET, steps=STEPS,
                     batch_size=4, max_seq_len=32, learning_rate=RATES.get(method, 1e-2),
                     method_options=OPTIONS.get(method, {}), holdout_fraction=0.0,
                     checkpoint_every=CHECKPOINT_EVERY, device=device,
                     precision="bf16" if device == "cpu" else None, out_dir=str(out), resume=resume)


def expected_precision(device: str) -> str:
    from smt_core import precision

    return precision.resolve("bf16" if device == "cpu" else None, torch.device(device)).name


def sites_of(model, manifest: dict):
    """The adapter's target sites in ``model`` (another copy of the base than the one open_adapter made)."""
    from smt_core.targets import find_sites

    return find_sites(model, manifest["targets"])
