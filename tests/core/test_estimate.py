"""The memory estimate (smt_core.estimate): dataset lengths, device, SMT's warm-up, and agreement with real runs
of the engine on tiny LLaMA, GPT-2 and BERT models (every component within ±20% of what the engine measured)."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from smt_core import estimate as E
from tests import factories

SMOLLM2 = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
           "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True}


def short_stats(longest: int = 24, shortest: int = 6) -> E.TokenStats:
    return E.TokenStats(rows=600, longest=longest, shortest=shortest, exact=True)


def test_short_rows_shrink_activations_to_the_longest_row():
    plain = E.estimate(SMOLLM2, "smt", 0.01, ["q", "k", "v"], 8, 256)
    short = E.estimate(SMOLLM2, "smt", 0.01, ["q", "k", "v"], 8, 256, tokens=short_stats())
    assert plain["sequence_length"] == 256 and short["sequence_length"] == 24
    assert short["memory"]["activations"] < plain["memory"]["activations"] / 8, "24 of 256 tokens: about a tenth"
    assert short["memory"]["peak"] < plain["memory"]["peak"]
    # the other components do not depend on the rows
    for k in ("weights", "trainable", "gradients", "optimizer", "selection"):
        assert short["memory"][k] == plain["memory"][k]
    # rows longer than max_seq_len are truncated: the width is max_seq_len
    long = E.estimate(SMOLLM2, "smt", 0.01, ["q", "k", "v"], 8, 256, tokens=short_stats(4000, 3000))
    assert long["sequence_length"] == 256 and long["memory"]["activations"] == plain["memory"]["activations"]


def test_cuda_halves_the_frozen_weights_but_not_what_trains():
    for method in ("smt", "lora", "dora", "snell"):
        cpu = E.estimate(SMOLLM2, method, 0.01, device="cpu")["memory"]
        gpu = E.estimate(SMOLLM2, method, 0.01, device="cuda")["memory"]
        assert gpu["weights"] * 2 == cpu["weights"] == E.model_shape(SMOLLM2).total_params * 4, method
        for k in ("trainable", "gradients", "optimizer"):
            assert gpu[k] == cpu[k], (method, k)  # fp32 on both
        assert gpu["activations"] < cpu["activations"], "bf16 autocast"
    full_cpu = E.estimate(SMOLLM2, "full", None)["memory"]
    full_gpu = E.estimate(SMOLLM2, "full", None, device="cuda")["memory"]
    assert full_gpu["weights"] == full_cpu["weights"] == 0 and full_gpu["trainable"] == full_cpu["trainable"]
    with pytest.raises(ValueError, match="device"):
        E.estimate(SMOLLM2, "smt", 0.01, device="tpu")


def test_selection_is_smt_warm_up_and_peak_takes_the_larger_phase():
    shape = E.model_shape(SMOLLM2)
    targeted = 30 * (576 * 576 + 2 * 192 * 576)
    smt = E.estimate(SMOLLM2, "smt", 0.01)["memory"]
    assert smt["selection"] == targeted * (4 + 4)  # fp32 sums + fp32 weight gradients
    assert E.estimate(SMOLLM2, "smt", 0.01, device="cuda")["memory"]["selection"] == targeted * (4 + 2)
    for method in ("lora", "dora", "snell", "full"):
        assert "selection" not in E.estimate(SMOLLM2, method, 0.01)["memory"], method
    assert smt["peak"] >= smt["weights"] + smt["selection"] + smt["activations"] * 0.5
    assert smt["peak"] >= sum(smt[k] for k in ("weights", "trainable", "gradients", "optimizer", "activations"))
    # the warm-up saves whole q/k/v inputs where training saves the chosen blocks' column slices only;
    # on short rows the warm-up's gradient sums outweigh training's sparse state, and peak follows them
    short = E.estimate(SMOLLM2, "smt", 0.01, tokens=short_stats())["memory"]
    training = sum(short[k] for k in ("weights", "trainable", "gradients", "optimizer", "activations"))
    assert short["peak"] > training + E.transient_bytes(shape, E.Workload(8, 24, True, True)), "warm-up dominates"
    # GPT-2's fused c_attn is one matrix: any of q, k, v puts all of it in the warm-up
    gpt2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 1000}
    assert E.selection_bytes(E.model_shape(gpt2), ["q"]) == 2 * 3 * 64 * 64 * 8


def test_token_stats_count_rows_as_the_engine_encodes_them(tmp_path):
    """The torch-free count (tokenizers + the chat template) equals the engine's encoded lengths."""
    from smt_core.data import encode
    from smt_core.models import ModelRef, load_tokenizer

    folder = tmp_path / "tok"
    shutil.copytree(factories.minilm_dir(), folder, ignore=shutil.ignore_patterns("*.safetensors", "1_Pooling"))
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": factories.CHAT_TEMPLATE}))
    tok = load_tokenizer(ModelRef("t", str(folder), True))
    for fmt, rows in (("prompt_completion", factories.completion_rows(20)),
                      ("classification", factories.classification_rows(20)),
                      ("multiple_choice", factories.multiple_choice_rows(20)),
                      ("chat", factories.chat_rows(20))):
        labels = sorted({str(r["label"]) for r in rows}) if fmt == "classification" else None
        lengths = [len(e.input_ids) for e in encode(rows, fmt, tok, 10_000, labels).examples]
        stats = E.token_stats(rows, fmt, folder)
        assert stats.exact and (stats.longest, stats.shortest) == (max(lengths), min(lengths)), fmt
    # without a tokenizer: about 4 characters a token, marked inexact
    rough = E.token_stats(factories.classification_rows(20), "classification", None)
    assert not rough.exact and 0.5 < rough.longest / stats.longest < 3


def test_large_datasets_tokenize_their_extremes_only(monkeypatch):
    monkeypatch.setattr(E, "MAX_TOKENIZED_ROWS", 50)
    monkeypatch.setattr(E, "TAIL_ROWS", 5)
    rows = [{"text": "word " * (i % 97 + 1), "label": "a"} for i in range(500)]
    stats = E.token_stats(rows, "classification", None)
    assert stats.rows == 500 and stats.longest == E.token_stats(rows[96:97], "classification", None).longest


# ---- agreement with the engine on tiny models ------------------------------------------------------------

def _rows(n: int, fmt: str, seed: int = 0) -> list[dict]:
    """Rows of 2 … 40 words (batches padded to their longest row), in a shuffled order."""
    rng = random.Random(seed)
    words = ["good", "bad", "film", "plot", "the", "a", "was", "really", "acting", "story"]
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(2 + (38 * i) // (n - 1)))
        rows.append({"text": text, "label": rng.choice(["pos", "neg"])} if fmt == "classification" else
                    {"prompt": f"review: {text}", "completion": " fine"})
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def tiny_wide(tmp_path_factory):
    """Tiny models whose layers outweigh their 30k-token vocabulary on classification (hidden 128, 3 layers)."""
    root = tmp_path_factory.mktemp("estimate-models")
    return {arch: factories.build_tiny_model(root / arch, arch, hidden=128, layers=3, heads=4, kv_heads=2,
                                             intermediate=384) for arch in ("llama", "gpt2", "bert")}


@pytest.mark.parametrize("arch,method,fmt,ckpt", [
    ("llama", "smt", "classification", False), ("llama", "lora", "classification", False),
    ("llama", "full", "classification", False), ("gpt2", "smt", "classification", False),
    ("gpt2", "lora", "classification", False), ("gpt2", "full", "classification", False),
    ("bert", "smt", "classification", False), ("bert", "lora", "classification", False),
    ("bert", "full", "classification", False), ("llama", "lora", "prompt_completion", False),
    ("gpt2", "smt", "prompt_completion", False),
    # activation checkpointing: each layer's input is saved (and the embeddings' dropout and norm)
    ("llama", "smt", "classification", True), ("gpt2", "lora", "classification", True),
    ("bert", "lora", "classification", True),
])
def test_estimate_matches_the_engine_measurement(tiny_wide, tmp_path, arch, method, fmt, ckpt):
    from smt_core import Callbacks, TrainSpec, run

    folder = tiny_wide[arch]
    rows = _rows(16, fmt)
    data = factories.write_jsonl(tmp_path / "d.jsonl", rows)
    opts = {"selection_steps": 2, "head_steps": 0} if method == "smt" else {}
    # one epoch of 4 batches: the longest row is in one of them, the batch the estimate sizes
    result = run(TrainSpec(model=str(folder), train_data=str(data), method=method, budget=0.02,
                           targets=["q", "k", "v"], steps=4, batch_size=4, max_seq_len=64, method_options=opts,
                           holdout_fraction=0.0, device="cpu", checkpoint_every=0, gradient_checkpointing=ckpt,
                           out_dir=str(tmp_path / "out")),
                 Callbacks())
    measured = result.metrics["memory"]
    tokens = E.token_stats_of_jsonl(data.read_bytes(), folder)
    est = E.estimate(E.load_config(folder), method, 0.02, ["q", "k", "v"], 4, 64, opts, tokens=tokens,
                     task="classification" if fmt == "classification" else "causal_lm",
                     gradient_checkpointing=ckpt)["memory"]
    compared = [k for k in ("trainable", "gradients", "optimizer", "activations", "selection")
                if k in measured or k in est]
    assert ("selection" in compared) == (method == "smt")
    for k in compared:  # (a new classification head also trains: a few hundred parameters, left out)
        assert 0.8 <= est[k] / measured[k] <= 1.2, (k, est[k], measured[k])


def test_smt_estimate_on_cuda_follows_the_gpu_layer_which_saves_its_input_whole():
    """The GPU layer ('fold') saves x itself where its blocks cover >= a quarter of the columns; the estimate
    uses the same threshold, and then counts the input whole instead of column slices."""
    from smt_core.methods.smt.layer import DENSE_GRAD_MIN_COVERAGE

    assert E.SMT_FOLD_MIN_COVERAGE == DENSE_GRAD_MIN_COVERAGE
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
           "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 49152, "tie_word_embeddings": True}
    shape = E.model_shape(cfg)
    cols = E.smt_slice_columns(shape, ["q", "k", "v"], 200, 256)
    assert cols["qkv"] / (16 * 2048) >= DENSE_GRAD_MIN_COVERAGE  # 1% of the 1B shape: blocks cover most columns
    slices = E.estimate(cfg, "smt", 0.01, ["q", "k", "v"], 8, 512, device="cpu")
    whole = E.estimate(cfg, "smt", 0.01, ["q", "k", "v"], 8, 512, device="cuda")
    lora = E.estimate(cfg, "lora", 0.01, ["q", "k", "v"], 8, 512, device="cuda")
    assert whole["memory"]["activations"] < lora["memory"]["activations"]  # LoRA also saves x @ A
    assert slices["memory"]["activations"] > 0
