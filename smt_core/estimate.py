"""Trainable parameters and training memory from a model's config.json alone: arithmetic, no model load.

The service shows these before a job is launched (``GET /v1/models/{id}/estimate``), routes jobs to worker
pools by them and checks budgets against them; the engine reports the real figures of every run
(``smt_core.memory``), under the same component names. Torch-free on purpose (the API never imports torch).
The trainable count is the method's own arithmetic (its spec's ``plan``, which the engine also runs) on the
shapes read here (:func:`geometry`); what a method keeps in memory is read from its spec's attributes.

Components, in bytes, as the engine measures them:

- ``weights``: the frozen weights (bf16 on CUDA for the budgeted methods, as ``smt_core.trainer`` loads them;
  fp32 on CPU, and for full fine-tuning everywhere); ``trainable``: the parameters the optimizer updates
  (fp32 always); ``gradients``: their fp32 gradients; ``optimizer``: AdamW's two fp32 moments.
- ``activations``: the tensors one training forward saves for its backward (each storage once, parameters
  not counted), from a per-layer count of what the layers of each architecture family save — see
  :func:`activation_tally`, derived by listing the saved tensors of LLaMA, BERT and GPT-2 layers with
  ``torch.autograd.graph.saved_tensors_hooks`` and checked against real runs (``bench/estimate_check.py``).
- ``selection`` (SMT only): the warm-up's fp32 gradient sums of every targeted matrix plus those matrices'
  weight gradients, in the weights' dtype.
- ``peak``: the larger of the warm-up (weights + selection + activations) and training (weights + trainable
  + gradients + optimizer + activations) phases, each plus the short-lived tensors of the loss (logits and
  their gradient) and of the backward pass. On CUDA that sum is ``max_memory_allocated``. On CPU it is the
  growth of the process's resident memory over what it held before loading the model, which also holds
  what glibc's heap keeps of freed tensors under 32 MiB (:func:`_phase_peak`, ``CPU_HEAP_GROWTH``).

Sequence length: with the rows of a dataset (:func:`token_stats`), the widest batch is ``batch_size`` rows
padded to the longest row (capped at ``max_seq_len``) — every batch is padded to its own longest row, and
over an epoch the longest row meets a batch — so activations scale with that width, not ``max_seq_len``.
Without a dataset every row is assumed ``max_seq_len`` tokens long.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smt_core import hyperparameters as hp
from smt_core.dataformats import template_messages
from smt_core.methods.spec import Geometry, Module, Plan, resolve_budget
from smt_core.registry import get_spec
from smt_core.spec import DEFAULT_TARGETS

DEVICES = ("cpu", "cuda")
FP32 = 4
BF16 = 2
# Without the model's tokenizer a row's tokens are approximated from its characters: about 4 characters per
# token for English text under the BPE / WordPiece / SentencePiece vocabularies of the supported families
# (SmolLM2's tokenizer gives 4.2 on SST-2 sentences, MiniLM's 4.6), plus the special tokens a row gets.
CHARS_PER_TOKEN = 4.0
# Rows tokenized exactly per dataset; above this, the longest (and shortest) rows by characters are.
MAX_TOKENIZED_ROWS = 20_000
TAIL_ROWS = 512


@dataclass
class ModelShape:
    architecture: str
    hidden: int
    layers: int
    vocab: int
    total_params: int
    targets: dict[str, tuple[int, int]] = field(default_factory=dict)  # logical target -> (out, in) per layer
    causal: bool = True
    family: str = "llama"  # llama | bert | gpt2: what each layer saves for backward differs
    heads: int = 1
    kv_heads: int = 1
    head_dim: int = 0
    inner: int = 0
    act_saved: int = 1  # (tokens × inner) tensors the MLP's activation function saves (gelu_new: 4)
    attn_dropout: float = 0.0
    hidden_dropout: float = 0.0
    tied: bool = True
    linear_params: int = 0  # weights of the layers' linear projections (autocast copies them on CUDA)


def load_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    return json.loads(path.read_text())


def _act_saved(name: str | None) -> int:
    """How many (tokens × inner) tensors the activation function saves: the tanh approximation written out
    in Python (``gelu_new``) saves four, fused activations one."""
    return 4 if (name or "") in ("gelu_new", "gelu_fast", "quick_gelu") else 1


def model_shape(cfg: dict[str, Any]) -> ModelShape:
    """Parameter count and projection shapes for the LLaMA, BERT and GPT-2 families (tied weights once)."""
    mtype = cfg.get("model_type", "")
    arch = (cfg.get("architectures") or [mtype])[0]
    if mtype == "gpt2":
        h, n, v, pos = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"], cfg.get("n_positions", 1024)
        inner = cfg.get("n_inner") or 4 * h
        heads = cfg.get("n_head", 12)
        per_layer = 4 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * inner + inner) + (inner * h + h)
        total = v * h + pos * h + n * per_layer + 2 * h
        t = {"q": (h, h), "k": (h, h), "v": (h, h), "o": (h, h), "up": (inner, h), "down": (h, inner)}
        return ModelShape(arch, h, n, v, total, t, True, "gpt2", heads, heads, h // heads, inner,
                          _act_saved(cfg.get("activation_function", "gelu_new")),
                          float(cfg.get("attn_pdrop", 0.1)), float(cfg.get("resid_pdrop", 0.1)), True,
                          n * (4 * h * h + 2 * h * inner))
    if mtype in ("bert", "roberta", "distilbert", "xlm-roberta"):
        h, n, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
        inner, pos = cfg["intermediate_size"], cfg.get("max_position_embeddings", 512)
        heads = cfg.get("num_attention_heads", 12)
        types = cfg.get("type_vocab_size", 2)
        per_layer = 4 * (h * h + h) + 2 * h + (h * inner + inner) + (inner * h + h) + 2 * h
        total = v * h + pos * h + types * h + 2 * h + n * per_layer + (h * h + h)  # + pooler
        t = {"q": (h, h), "k": (h, h), "v": (h, h), "o": (h, h), "up": (inner, h), "down": (h, inner)}
        return ModelShape(arch, h, n, v, total, t, False, "bert", heads, heads, h // heads, inner,
                          _act_saved(cfg.get("hidden_act", "gelu")),
                          float(cfg.get("attention_probs_dropout_prob", 0.1)),
                          float(cfg.get("hidden_dropout_prob", 0.1)), True, n * (4 * h * h + 2 * h * inner))
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
    tied = bool(cfg.get("tie_word_embeddings", True))
    head = 0 if tied else v * h
    total = v * h + n * per_layer + h + head
    t = {"q": (qo, h), "k": (kvd, h), "v": (kvd, h), "o": (h, qo), "gate": (inner, h), "up": (inner, h),
         "down": (h, inner)}
    return ModelShape(arch, h, n, v, total, t, True, "llama", heads, kv, hd, inner,
                      _act_saved(cfg.get("hidden_act", "silu")), float(cfg.get("attention_dropout", 0.0) or 0.0),
                      0.0, tied, n * (2 * h * qo + 2 * h * kvd + 3 * h * inner))


def _mats(shape: ModelShape, targets: list[str]) -> list[tuple[int, int]]:
    return [shape.targets[t] for t in targets if t in shape.targets] * shape.layers


def geometry(shape: ModelShape, targets: list[str]) -> Geometry:
    """The targeted modules as the engine finds them (smt_core.targets.find_sites), for the methods' own
    arithmetic (MethodSpec.plan): one module per target and layer, except GPT-2's fused Q/K/V (``c_attn``),
    one module holding whichever of q, k, v are targeted."""
    wanted = [t for t in targets if t in shape.targets]
    per_layer: list[Module] = []
    if shape.family == "gpt2" and set(wanted) & {"q", "k", "v"}:
        fused = tuple((t, shape.targets[t][0]) for t in ("q", "k", "v") if t in wanted)
        per_layer.append(Module("attn.c_attn", shape.hidden, 3 * shape.hidden, fused))
        wanted = [t for t in wanted if t not in ("q", "k", "v")]
    per_layer += [Module(t, shape.targets[t][1], shape.targets[t][0], ((t, shape.targets[t][0]),)) for t in wanted]
    return Geometry(tuple(per_layer) * shape.layers, shape.total_params)


def plan(shape: ModelShape, method: str, budget: float | int | None, targets: list[str],
         options: dict[str, Any] | None = None) -> Plan:
    """What ``method`` trains on this model: the spec's own arithmetic, the engine's (ConfigError naming
    ``budget``, ``targets`` or an option when the engine would refuse the job)."""
    spec = get_spec(method)
    geo = geometry(shape, targets)
    spec.check_targets(geo)
    count = resolve_budget(budget, shape.total_params) if spec.uses_budget else None
    return spec.plan(geo, count, spec.parse(options))


def trainable_params(shape: ModelShape, method: str, budget: float | int | None, targets: list[str],
                     options: dict[str, Any] | None = None) -> int:
    return plan(shape, method, budget, targets, options).trainable


# ---- token lengths of a dataset's rows ------------------------------------------------------------------

@dataclass(frozen=True)
class TokenStats:
    """Token lengths of a dataset's rows as the engine encodes them (before truncation to max_seq_len)."""

    rows: int
    longest: int
    shortest: int
    exact: bool  # counted with the model's tokenizer (else CHARS_PER_TOKEN)

    def width(self, max_seq_len: int) -> int:
        """The padded width of the widest batch: the longest row, truncated to ``max_seq_len``."""
        return max(1, min(max_seq_len, self.longest))

    def padded(self, max_seq_len: int) -> bool:
        """Whether batches carry padding (rows of different lengths after truncation): the attention then
        takes an explicit mask, which changes what it saves."""
        return min(max_seq_len, self.shortest) < min(max_seq_len, self.longest)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "longest": self.longest, "shortest": self.shortest, "exact": self.exact}


class RowTokenizer:
    """Counts a row's tokens the way ``smt_core.data.encode`` builds them, with the ``tokenizers`` library
    (Rust, torch-free) on the model's ``tokenizer.json``; chat rows go through the model's chat template
    (jinja2 in a sandbox, as transformers renders it). Without a tokenizer: CHARS_PER_TOKEN."""

    def __init__(self, folder: str | Path | None) -> None:
        self.tok = None
        self.template = None
        self.eos = 1
        self.specials: dict[str, str] = {}
        if folder is None or not (Path(folder) / "tokenizer.json").is_file():
            return
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self.tok.no_padding()  # a tokenizer.json may pad or truncate every encoding (MiniLM's: to 128)
        self.tok.no_truncation()
        cfg: dict[str, Any] = {}
        if (Path(folder) / "tokenizer_config.json").is_file():
            cfg = json.loads((Path(folder) / "tokenizer_config.json").read_text())
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = cfg.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                self.specials[key] = value
        self.eos = 1 if self.specials.get("eos_token") else 0
        template = cfg.get("chat_template")
        if (Path(folder) / "chat_template.jinja").is_file():
            template = (Path(folder) / "chat_template.jinja").read_text()
        if isinstance(template, str):
            try:
                from jinja2.sandbox import ImmutableSandboxedEnvironment

                def raise_exception(message):
                    raise ValueError(message)

                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
                env.globals["raise_exception"] = raise_exception
                self.template = env.from_string(template)
            except Exception:  # noqa: BLE001 - no jinja2 or a template it cannot read: approximate chat rows
                self.template = None

    @property
    def exact(self) -> bool:
        return self.tok is not None

    def count(self, text: str, special: bool) -> int:
        if not text:
            return 0
        if self.tok is None:
            return math.ceil(len(text) / CHARS_PER_TOKEN) + (2 if special else 0)
        return len(self.tok.encode(text, add_special_tokens=special).ids)

    def row(self, fmt: str, row: dict[str, Any]) -> int:
        if fmt == "classification":
            return self.count(str(row["text"]), True)
        if fmt == "prompt_completion":
            return self.count(row["prompt"], True) + self.count(row["completion"], False) + self.eos
        if fmt == "multiple_choice":
            prompt, choice = row["prompt"], row["choices"][row["label"]]
            if prompt and choice and not prompt[-1].isspace() and not choice[0].isspace():
                choice = " " + choice
            return self.count(prompt, True) + self.count(choice, False)
        if fmt == "chat":
            messages = template_messages(row["messages"])
            if self.template is not None:
                try:
                    text = self.template.render(messages=messages, add_generation_prompt=False, **self.specials)
                    return self.count(text, False)
                except Exception:  # noqa: BLE001 - a template that needs what we do not pass: approximate
                    pass
            # role markers and separators: about 5 tokens a message under the common templates
            return sum(self.count(m["content"], False) + 5 for m in messages)
        raise ValueError(f"data: unknown format {fmt!r}")


def _row_chars(fmt: str, row: dict[str, Any]) -> int:
    if fmt == "classification":
        return len(str(row["text"]))
    if fmt == "prompt_completion":
        return len(row["prompt"]) + len(row["completion"])
    if fmt == "multiple_choice":
        return len(row["prompt"]) + len(row["choices"][row["label"]])
    return sum(len(m["content"]) + 8 for m in row["messages"])


def token_stats(rows: list[dict[str, Any]], fmt: str, tokenizer_folder: str | Path | None) -> TokenStats:
    """Longest and shortest row in tokens. Up to MAX_TOKENIZED_ROWS rows are all tokenized; beyond that the
    TAIL_ROWS longest and shortest by characters are (a row's tokens follow its characters closely)."""
    if not rows:
        return TokenStats(0, 0, 0, False)
    counter = RowTokenizer(tokenizer_folder)
    chosen: Iterable[dict[str, Any]] = rows
    if len(rows) > MAX_TOKENIZED_ROWS:
        order = sorted(range(len(rows)), key=lambda i: _row_chars(fmt, rows[i]))
        chosen = [rows[i] for i in order[:TAIL_ROWS] + order[-TAIL_ROWS:]]
    lengths = [counter.row(fmt, r) for r in chosen]
    return TokenStats(len(rows), max(lengths), min(lengths), counter.exact)


def token_stats_of_jsonl(data: bytes, tokenizer_folder: str | Path | None) -> TokenStats:
    """The same from a JSONL upload (validated lines only, as the engine reads them)."""
    from smt_core.dataformats import validate_lines

    report, rows = validate_lines(data.splitlines())
    if report.format is None or not rows:
        return TokenStats(0, 0, 0, False)
    return token_stats(rows, report.format, tokenizer_folder)


# ---- activations ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """One training batch as the model sees it."""

    batch: int
    seq: int  # padded width
    padded: bool  # an explicit attention mask (rows of different lengths)
    causal_lm: bool  # a loss over the vocabulary (else a classification head)
    device: str = "cpu"

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


def _groups(shape: ModelShape) -> dict[str, tuple[tuple[str, ...], int]]:
    """Linear inputs: group -> (targets reading that one input tensor, its width)."""
    qo = shape.targets["q"][0]
    if shape.family == "llama":
        return {"qkv": (("q", "k", "v"), shape.hidden), "o": (("o",), qo), "gate_up": (("gate", "up"), shape.hidden),
                "down": (("down",), shape.inner)}
    return {"qkv": (("q", "k", "v"), shape.hidden), "o": (("o",), shape.hidden), "gate_up": (("up",), shape.hidden),
            "down": (("down",), shape.inner)}


def smt_slice_columns(shape: ModelShape, targets: list[str], blocks: int, block_size: int) -> dict[str, float]:
    """Expected input columns SMT's chosen blocks read, per input group, summed over layers.

    Each chosen block saves the column slice of its input it reads (Q, K and V share their input, so a
    column used by several of them is saved once). Which blocks win is only known after the warm-up; the
    estimate takes ``blocks`` blocks spread at random over the eligible ones: a group whose column
    ``c`` holds ``r`` eligible blocks out of ``N`` keeps it with probability 1 − (1 − r/N)^blocks."""
    groups = _groups(shape)
    per_group: dict[str, tuple[int, int]] = {}  # group -> (column blocks per layer, eligible blocks per column)
    for g, (members, width) in groups.items():
        rows = sum(math.ceil(shape.targets[t][0] / block_size) for t in members if t in targets and t in shape.targets)
        if rows:
            per_group[g] = (math.ceil(width / block_size), rows)
    n = sum(c * r for c, r in per_group.values()) * shape.layers
    if not n:
        return {}
    out = {}
    for g, (cols, rows) in per_group.items():
        used = 1 - (1 - rows / n) ** blocks
        out[g] = cols * shape.layers * used * block_size
    return out


class Tally:
    """Bytes as (bytes of one tensor, how many): what a CPU allocator does with a tensor depends on its size."""

    def __init__(self) -> None:
        self.items: list[tuple[float, float]] = []

    def add(self, each: float, count: float = 1) -> None:
        if each > 0 and count > 0:
            self.items.append((each, count))

    def extend(self, other: Tally, times: float = 1) -> None:
        self.items += [(e, c * times) for e, c in other.items]

    def total(self) -> int:
        return int(sum(e * c for e, c in self.items))

    def small(self) -> int:
        """Bytes in tensors below glibc's largest mmap threshold (the ones its heap keeps when freed)."""
        return int(sum(e * c for e, c in self.items if e < MMAP_THRESHOLD_MAX))


# glibc malloc serves a block of 32 MiB or more (its largest dynamic mmap threshold on 64-bit) with its own
# mmap and unmaps it when it is freed; smaller blocks come from its heap, which keeps what is freed.
MMAP_THRESHOLD_MAX = 32 * 2**20
# Across training steps the heap grows past the live peak of those smaller tensors (freed blocks are kept
# and reused only in part): measured 1.2–2.4× on SmolLM2-135M (bench/estimate_check.py), steady after 2–3
# steps; with MALLOC_MMAP_THRESHOLD_=65536 (no heap for them) the gap vanished and every step's peak matched
# the live estimate within 2%. CUDA's caching allocator is measured by allocated bytes, so none there.
CPU_HEAP_GROWTH = 1.6
# SMT's layer on a GPU (smt_core.methods.smt.layer.pick_impl) saves a module's whole input when its blocks
# cover at least this share of the input columns, and the column slices otherwise (a test keeps them equal)
SMT_FOLD_MIN_COVERAGE = 0.25


@dataclass
class SavedByPlace:
    """What one forward saves, by where it sits: ``layer`` in every layer, ``first_cut`` in layer 0 but
    only when something below it trains, ``final`` after the last layer, ``embed`` by the embeddings."""

    layer: Tally = field(default_factory=Tally)
    first_cut: Tally = field(default_factory=Tally)
    final: Tally = field(default_factory=Tally)
    embed: Tally = field(default_factory=Tally)


def activation_tally(shape: ModelShape, work: Workload, method: str, targets: list[str], *,
                     lora_rank: int = 0, smt_columns: dict[str, float] | None = None, smt_block: int = 0,
                     warm_up: bool = False, checkpointing: bool = False, one_layer: bool = False) -> Tally:
    """Tensors saved for backward by one training forward: a per-layer count of what the layers save.

    Derived by listing every saved tensor (``saved_tensors_hooks``) of LLaMA, BERT and GPT-2 layers:

    - A frozen layer that gradients flow through (every method trains something in every layer, or below
      it) saves its norms' inputs (fp32) and statistics, the attention's inputs and outputs, and the MLP
      activation's input and outputs — never the inputs of its frozen projections (their weight gradient
      is not needed). LLaMA's SDPA saves q, k, v, its output and the log-sum-exp (k and v at the KV heads'
      width; at every head's width when a padding mask makes transformers repeat them; on CPU the mask
      itself, as fp32, per layer); BERT and GPT-2 train with attention dropout, which on CPU sends SDPA to
      its math path: q, kᵀ, v and three (heads × seq²) tensors (probabilities, dropout mask, dropped
      probabilities). Hidden dropout saves a mask (fp32 on CPU, bool on CUDA). The layer below the first
      trainable one saves nothing under its norm.
    - A projection whose weight trains (full fine-tuning; SMT's warm-up for the targets) saves its input,
      once per input tensor (Q, K and V share theirs). LoRA saves the same input for A and A's output (rank
      wide) for B; DoRA also the base and LoRA outputs of each module; SMT the input column slices its
      chosen blocks read (:func:`smt_slice_columns`); full fine-tuning also each norm's normalized input
      (for the norm's weight) and the LM head's input.
    - The loss: log-softmax output over the vocabulary, fp32 (tokens × vocab × 4), and the labels.

    On CUDA (bf16 autocast) the projections' outputs and inputs are bf16 (2 bytes), norms and the loss
    stay fp32; full fine-tuning keeps fp32 weights, so autocast saves a bf16 copy of every projection's
    input and weight. With gradient checkpointing only each layer's input is saved (fp32 on CPU, the
    residual stream's dtype); one layer's activations come back while it is recomputed in the backward pass
    (``one_layer=True`` gives those, a short-lived part of the peak).
    """
    spec = get_spec(method)
    full = spec.trains_base
    saved = _llama_frozen_path(shape, work, full) if shape.family == "llama" else _encoder_frozen_path(shape, work)
    if full:  # the embeddings train: what they feed saves for backward
        saved.final.extend(saved.embed)
    trains = set(shape.targets) if full else set(targets) if (warm_up or spec.reads_inputs) else set()
    _add_trained_inputs(saved.layer, shape, work, trains, full)
    if not warm_up:
        _add_adapter_inputs(saved.layer, shape, work, method, targets, lora_rank, smt_columns, smt_block)
    if one_layer:
        return saved.layer
    return _whole_forward(saved, shape, work, full, checkpointing)


def _act_bytes(work: Workload) -> int:
    """Bytes of one activation entry: bf16 under CUDA's autocast, fp32 on CPU."""
    return BF16 if work.device == "cuda" else FP32


def _add_norm(into: Tally, tokens: int, width: int, stats: int) -> None:
    """A norm's input (fp32) and its per-token statistics."""
    into.add(tokens * width * FP32)
    into.add(tokens * FP32, stats)


def _llama_frozen_path(shape: ModelShape, work: Workload, full: bool) -> SavedByPlace:
    """A LLaMA-family layer that gradients flow through: SDPA's q, k, v, output and log-sum-exp, two RMS
    norms, the gated MLP's activation; full fine-tuning adds the norms' normalized inputs."""
    cuda, a, t = work.device == "cuda", _act_bytes(work), work.tokens
    h, inner, heads = shape.hidden, shape.inner, shape.heads
    qo, kvd = shape.targets["q"][0], shape.targets["k"][0]
    saved = SavedByPlace()
    layer = saved.layer
    kv_w = qo if (work.padded and shape.kv_heads < heads) else kvd
    layer.add(t * qo * a, 2)  # q (after rotary) and the attention's output
    layer.add(t * kv_w * a, 2)  # k and v
    layer.add(t * heads * FP32)  # log-sum-exp
    if work.padded:
        layer.add(work.batch * work.seq * work.seq * (BF16 if cuda else FP32))  # the mask, made per layer
    _add_norm(layer, t, h, 1)
    _add_norm(layer, t, h, 1)
    layer.add(t * inner * a, 3)  # the activation's input and output, and the up projection's output
    _add_norm(saved.first_cut, t, h, 1)  # layer 0's first norm: nothing below it trains
    _add_norm(saved.final, t, h, 1)
    if full:
        layer.add(t * h * FP32, 2)  # normalized inputs, for the norms' weights
        saved.final.add(t * h * FP32)
    return saved


def _encoder_frozen_path(shape: ModelShape, work: Workload) -> SavedByPlace:
    """A BERT or GPT-2 layer that gradients flow through: attention (its math path under dropout on CPU),
    dropout masks, two layer norms, the MLP's activation; BERT's embeddings end in a norm and a dropout."""
    cuda, a, t = work.device == "cuda", _act_bytes(work), work.tokens
    h, heads, B, S = shape.hidden, shape.heads, work.batch, work.seq
    mask_b = 1 if cuda else FP32  # dropout mask
    saved = SavedByPlace()
    layer = saved.layer
    if shape.attn_dropout > 0 and not cuda:
        layer.add(t * h * a, 3)
        layer.add(B * heads * S * S * a, 3)
    else:
        layer.add(t * h * a, 4)
        layer.add(t * heads * FP32)
        if work.padded:
            layer.add(B * S * S * (BF16 if cuda else FP32))
    if shape.hidden_dropout > 0:
        layer.add(t * h * mask_b, 2)
    _add_norm(layer, t, h, 2)
    _add_norm(layer, t, h, 2)
    layer.add(t * shape.inner * a, shape.act_saved)
    if shape.family == "gpt2":
        _add_norm(saved.first_cut, t, h, 2)
        _add_norm(saved.final, t, h, 2)
    else:
        _add_norm(saved.embed, t, h, 2)  # BERT's embeddings end in a norm …
    if shape.hidden_dropout > 0:
        saved.embed.add(t * h * mask_b)  # … and (both) a dropout
    return saved


def _add_trained_inputs(layer: Tally, shape: ModelShape, work: Workload, trains: set[str], full: bool) -> None:
    """The input of every projection whose weight trains, once per input tensor (Q, K and V share one)."""
    cuda, a, t = work.device == "cuda", _act_bytes(work), work.tokens
    for members, width in _groups(shape).values():
        if trains & set(members):
            if full and cuda:  # autocast copies the fp32 input for each projection
                layer.add(t * width * BF16, len([m for m in members if m in shape.targets]))
            else:
                layer.add(t * width * a)


def _add_adapter_inputs(layer: Tally, shape: ModelShape, work: Workload, method: str, targets: list[str],
                        lora_rank: int, smt_columns: dict[str, float] | None, smt_block: int) -> None:
    """What a trained adapter saves beside the frozen path: LoRA's rank-wide outputs (DoRA's module outputs
    too), or the input columns SMT's chosen blocks read."""
    spec = get_spec(method)
    cuda, a, t = work.device == "cuda", _act_bytes(work), work.tokens
    if spec.reads_inputs:
        for target in targets:
            if target in shape.targets:
                out_f, in_f = shape.targets[target]
                layer.add(t * lora_rank * a)
                if cuda:  # PEFT casts x to the adapter's fp32 dtype; autocast saves a bf16 copy per module
                    layer.add(t * in_f * BF16)
                layer.add(t * out_f * a, spec.output_copies)  # DoRA: the base and LoRA outputs
    if spec.selects_blocks and smt_columns and smt_block:
        groups, L = _groups(shape), shape.layers
        for g, cols in smt_columns.items():
            width = groups[g][1]
            if cuda and cols / (L * width) >= SMT_FOLD_MIN_COVERAGE:  # the GPU layer saves its input whole
                layer.add(t * width * a)
            else:  # one slice copy per chosen column block
                layer.add(t * smt_block * a, cols / (L * smt_block))


def _whole_forward(saved: SavedByPlace, shape: ModelShape, work: Workload, full: bool,
                   checkpointing: bool) -> Tally:
    """Every layer's share (or, checkpointed, each layer's input alone), then the head and the loss."""
    cuda, a, t = work.device == "cuda", _act_bytes(work), work.tokens
    h, B, L = shape.hidden, work.batch, shape.layers
    out = Tally()
    if checkpointing:
        out.add(t * h * (FP32 if not cuda or full else BF16), L)  # each layer's input
        if not full:  # the trainer makes the embeddings' output require grad: their norm and dropout save too
            out.extend(saved.embed)
        if shape.family == "bert" and work.padded:
            out.add(B * work.seq * work.seq)  # the bool attention mask the first layer keeps
    else:
        out.extend(saved.layer, L)
        if not full:
            out.extend(saved.first_cut, -1)
    out.extend(saved.final)
    if work.causal_lm:
        out.add(t * shape.vocab * FP32)  # log-softmax output (fp32)
        out.add(t * 8)  # the labels
        if full:
            out.add(t * h * (BF16 if cuda else FP32))  # the LM head's input
    elif shape.family == "bert":
        out.add(B * h * a, 2)  # the pooler's output and its dropout (it reads the first token only)
    else:
        out.add(t * h * a)  # the head scores every position; the last real token's score is used
    if full and cuda:  # autocast's bf16 copies of the fp32 weights
        out.add(shape.linear_params * BF16)
        if work.causal_lm:
            out.add(shape.vocab * h * BF16)
    return out


def activation_bytes(shape: ModelShape, work: Workload, method: str, targets: list[str], **kwargs: Any) -> int:
    """Bytes saved for backward by one training forward (see :func:`activation_tally`)."""
    return activation_tally(shape, work, method, targets, **kwargs).total()


def transient_tally(shape: ModelShape, work: Workload) -> Tally:
    """Short-lived tensors at the turn from forward to backward, on top of the saved activations: the
    logits and the gradient of the loss's log-softmax (fp32, tokens × vocab each), and the backward's
    working set of a layer (a few tokens × intermediate tensors)."""
    t = work.tokens
    out = Tally()
    if work.causal_lm:
        out.add(t * shape.vocab * FP32, 2)
    out.add(t * max(shape.inner, shape.hidden) * (BF16 if work.device == "cuda" else FP32), 3)
    return out


def transient_bytes(shape: ModelShape, work: Workload) -> int:
    return transient_tally(shape, work).total()


def gradient_tally(shape: ModelShape, method: str, trainable: int) -> Tally:
    """fp32 gradients, tensor by tensor for full fine-tuning (the embeddings' is the large one)."""
    out = Tally()
    if not get_spec(method).trains_base:
        out.add(trainable * FP32)
        return out
    embeddings = 1 if shape.tied or not shape.causal else 2  # an untied LM head is as large
    out.add(shape.vocab * shape.hidden * FP32, embeddings)
    per_layer = [o * i for o, i in shape.targets.values()]
    for n in per_layer:
        out.add(n * FP32, shape.layers)
    rest = trainable - embeddings * shape.vocab * shape.hidden - shape.layers * sum(per_layer)
    out.add(max(0, rest) * FP32)  # norms, biases, positions: small tensors
    return out


def selection_bytes(shape: ModelShape, targets: list[str], device: str = "cpu") -> int:
    """SMT's warm-up: an fp32 gradient sum of every targeted matrix, and the matrices' weight gradients in
    the weights' dtype (bf16 on CUDA). GPT-2's fused Q/K/V is one matrix: any of q, k, v adds it whole."""
    wbytes = BF16 if device == "cuda" else FP32
    n = 0
    if shape.family == "gpt2" and set(targets) & {"q", "k", "v"}:
        n += 3 * shape.hidden * shape.hidden * shape.layers
        targets = [t for t in targets if t not in ("q", "k", "v")]
    n += sum(o * i for o, i in _mats(shape, targets))
    return n * (FP32 + wbytes)


def _phase_peak(resident: int, work: Tally, gradients: Tally, device: str, step_temporaries: int = 0) -> int:
    """Peak of one phase: what stays (weights, trainable, optimizer state, SMT's sums) plus what a step makes.

    Forward and backward: the step's activations and short-lived tensors, and the gradients. The optimizer
    step: the gradients and AdamW's temporaries (two of the largest trainable tensor's size, at its turn).
    CUDA (allocated bytes): the sums. CPU (resident memory): tensors of 32 MiB or more come and go with their
    own mappings; the heap of the smaller ones settles at CPU_HEAP_GROWTH × their live peak — or at
    activations + gradients when those are larger (full fine-tuning's parameter gradients are made while
    the activations are freed, and reuse their blocks) — and keeps that size through the optimizer step."""
    if device == "cuda":
        return resident + max(work.total() + gradients.total(), gradients.total() + step_temporaries)
    big = work.total() - work.small() + gradients.total() - gradients.small()
    heap = max(CPU_HEAP_GROWTH * work.small(), work.small() + gradients.small())
    optimizer_step = gradients.total() - gradients.small() + heap + step_temporaries
    return int(resident + max(big + heap, optimizer_step))


def memory(shape: ModelShape, trainable: int, batch_size: int, max_seq_len: int, *, method: str = "full",
           targets: list[str] | None = None, device: str = "cpu", tokens: TokenStats | None = None,
           causal_lm: bool | None = None, rank: int = 0, block_size: int = 0,
           gradient_checkpointing: bool = hp.GRADIENT_CHECKPOINTING.default) -> dict[str, int]:
    """Bytes by component (see the module docstring); ``tokens`` makes the sequence length the dataset's."""
    targets = list(targets or DEFAULT_TARGETS)
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {', '.join(DEVICES)}, got {device!r}")
    seq = tokens.width(max_seq_len) if tokens is not None and tokens.rows else max_seq_len
    padded = bool(tokens is not None and tokens.rows and tokens.padded(max_seq_len))
    work = Workload(batch_size, seq, padded, shape.causal if causal_lm is None else causal_lm, device)
    cuda = device == "cuda"
    spec = get_spec(method)
    frozen_b = BF16 if cuda and not spec.trains_base else FP32
    frozen = 0 if spec.trains_base else shape.total_params * frozen_b
    columns = (smt_slice_columns(shape, targets, max(1, trainable // max(1, block_size * block_size)), block_size)
               if spec.selects_blocks and block_size else None)
    act = activation_tally(shape, work, method, targets, lora_rank=rank, smt_columns=columns, smt_block=block_size,
                           checkpointing=gradient_checkpointing)
    grads = gradient_tally(shape, method, trainable)
    parts = {"weights": frozen, "trainable": trainable * FP32, "gradients": grads.total(),
             "optimizer": 2 * trainable * FP32, "activations": act.total()}
    step = Tally()
    step.extend(act)
    step.extend(transient_tally(shape, work))
    if gradient_checkpointing:  # the layer being recomputed
        step.extend(activation_tally(shape, work, method, targets, lora_rank=rank, smt_columns=columns,
                                     smt_block=block_size, one_layer=True))
    largest = max((e for e, _ in grads.items), default=0)  # AdamW makes two temporaries of a tensor's size
    peak = _phase_peak(frozen + parts["trainable"] + parts["optimizer"], step, grads, device, int(2 * largest))
    if spec.selects_blocks:
        parts["selection"] = selection_bytes(shape, targets, device)
        warm = Tally()
        warm.extend(activation_tally(shape, work, method, targets, warm_up=True, checkpointing=gradient_checkpointing))
        warm.extend(transient_tally(shape, work))
        if gradient_checkpointing:
            warm.extend(activation_tally(shape, work, method, targets, warm_up=True, one_layer=True))
        peak = max(peak, _phase_peak(frozen + parts["selection"], warm, Tally(), device))
    parts["peak"] = int(peak)
    return parts


def estimate(cfg: dict[str, Any], method: str, budget: float | int | None, targets: list[str] | None = None,
             batch_size: int = hp.BATCH_SIZE.default, max_seq_len: int = hp.MAX_SEQ_LEN.default,
             options: dict[str, Any] | None = None, *,
             device: str = "cpu", tokens: TokenStats | None = None, task: str | None = None,
             gradient_checkpointing: bool = hp.GRADIENT_CHECKPOINTING.default,
             gradient_accumulation_steps: int = hp.GRADIENT_ACCUMULATION_STEPS.default) -> dict[str, Any]:
    """What the dashboard shows before launch: trainable and total params, memory by component.

    ``gradient_accumulation_steps``: an optimizer step takes that many micro-batches of ``batch_size`` rows,
    one forward and backward at a time, so activations are one micro-batch's: the memory is ``batch_size``'s,
    and the ``effective_batch_size`` (what the update averages over) is ``batch_size`` × that.

    ``device``: cpu (fp32 throughout) or cuda (bf16 frozen weights and autocast). ``tokens``: the training
    dataset's row lengths (:func:`token_stats`). ``task``: causal_lm or classification (default: the
    model's own — encoders classify)."""
    shape = model_shape(cfg)
    targets = list(targets or DEFAULT_TARGETS)
    planned = plan(shape, method, budget, targets, options)
    n, rank, bs = planned.trainable, planned.rank, planned.block_size
    causal = shape.causal and task != "classification"  # an encoder always trains a classification head
    mem = memory(shape, n, batch_size, max_seq_len, method=method, targets=targets, device=device, tokens=tokens,
                 causal_lm=causal, rank=rank, block_size=bs, gradient_checkpointing=gradient_checkpointing)
    seq = tokens.width(max_seq_len) if tokens is not None and tokens.rows else max_seq_len
    return {"method": method, "budget": budget, "targets": targets, "trainable_params": n,
            "total_params": shape.total_params, "memory": mem, "device": device, "sequence_length": seq,
            "effective_batch_size": batch_size * gradient_accumulation_steps, "estimated": True}
