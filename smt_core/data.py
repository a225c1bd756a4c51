"""Turn validated rows into token tensors, batches and evaluation scores.

Causal LMs learn completions only: prompt tokens get label -100 (``prompt_completion``; ``chat`` masks all
but assistant turns; ``multiple_choice`` trains on the correct choice). Rows longer than ``max_seq_len`` are
truncated (prompt from the left, so the answer survives) and counted. Batch order is a seeded permutation
per epoch, so step N's batch is a pure function of (seed, N): that is what makes resume exact.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from smt_core.dataformats import is_trained_turn, template_messages

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int] | int  # token labels (causal LM) or a class index (classification)
    row: dict[str, Any] = field(default_factory=dict)  # the source row, for evaluation


@dataclass
class Encoded:
    examples: list[Example]
    truncated: int


def _join(prompt: str, completion: str) -> tuple[str, str]:
    """multiple_choice: a space between prompt and choice unless one side already has it."""
    if prompt and completion and not prompt[-1].isspace() and not completion[0].isspace():
        return prompt, " " + completion
    return prompt, completion


def encode_pair(tok, prompt: str, completion: str, max_len: int, add_eos: bool = True) -> tuple[list[int], list[int], bool]:
    p = tok(prompt, add_special_tokens=True)["input_ids"] if prompt else []
    c = tok(completion, add_special_tokens=False)["input_ids"]
    if add_eos and tok.eos_token_id is not None:
        c = c + [tok.eos_token_id]
    truncated = len(p) + len(c) > max_len
    if truncated:
        c = c[:max_len]  # an over-long completion loses its end
        p = p[len(p) - (max_len - len(c)):] if max_len - len(c) > 0 else []  # the prompt loses its start
    return p + c, [IGNORE] * len(p) + c, truncated


def chat_ids(tok, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    """Token ids of a conversation under the tokenizer's chat template (it may return ids or an encoding)."""
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def encode_chat(tok, messages: list[dict[str, Any]], max_len: int) -> tuple[list[int], list[int], bool]:
    """Chat template over the whole conversation; labels on the trained assistant turns only (prefix rendering):
    an assistant turn with OpenAI's ``weight`` 0 is context, with no loss on it."""
    def render(msgs, gen):
        return chat_ids(tok, template_messages(msgs), gen)

    ids = render(messages, False)
    labels = [IGNORE] * len(ids)
    for i, m in enumerate(messages):
        if not is_trained_turn(m):
            continue
        start = len(render(messages[:i], True)) if i else 0
        end = len(render(messages[:i + 1], False))
        labels[start:end] = ids[start:end]
    truncated = len(ids) > max_len
    return ids[:max_len], labels[:max_len], truncated


def encode(rows: list[dict[str, Any]], fmt: str, tok, max_len: int,
           label_names: list[str] | None = None) -> Encoded:
    out: list[Example] = []
    n_trunc = 0
    for row in rows:
        if fmt == "classification":
            ids = tok(row["text"], truncation=False)["input_ids"]
            cut = len(ids) > max_len
            if cut:
                ids = ids[:max_len - 1] + ids[-1:]  # keep the closing special token
            assert label_names is not None
            out.append(Example(ids, label_names.index(str(row["label"])), row))
        elif fmt == "prompt_completion":
            ids, labels, cut = encode_pair(tok, row["prompt"], row["completion"], max_len)
            out.append(Example(ids, labels, row))
        elif fmt == "multiple_choice":
            ids, labels, cut = encode_pair(tok, *_join(row["prompt"], row["choices"][row["label"]]), max_len,
                                           add_eos=False)
            out.append(Example(ids, labels, row))
        elif fmt == "chat":
            ids, labels, cut = encode_chat(tok, row["messages"], max_len)
            out.append(Example(ids, labels, row))
        else:
            raise ValueError(f"data: unknown format {fmt!r}")
        n_trunc += int(cut)
    return Encoded(out, n_trunc)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (batch, seq)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    cls = isinstance(examples[0].labels, int)
    labels = torch.tensor([e.labels for e in examples]) if cls else torch.full((len(examples), width), IGNORE)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        if not cls:
            labels[i, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def split_holdout(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded split: (train, held out). Fewer than 10 rows or fraction 0: nothing held out."""
    if fraction <= 0 or len(rows) < 10:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(fraction * len(rows)))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


class BatchPlan:
    """Step → batch of example indices; a seeded permutation per epoch (a pure function of the step)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps_per_epoch = max(1, math.ceil(n / batch_size))
        self._perm: tuple[int, torch.Tensor] | None = None

    def indices(self, step: int) -> list[int]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return self._perm[1][pos * self.batch_size:(pos + 1) * self.batch_size].tolist()

    def iterate(self, examples: list[Example], pad_id: int, device, start: int = 0, rank: int = 0,
                world: int = 1) -> Iterator[dict]:
        """Batches from ``start`` on; with ``world`` > 1, only rank ``rank``'s share of each global batch."""
        step = start
        while True:
            batch = collate([examples[i] for i in self.indices(step)], pad_id)
            yield to_device(shard(batch, rank, world) if world > 1 else batch, device)
            step += 1

    def iterate_micro(self, examples: list[Example], pad_id: int, device, micro: int, start: int = 0, rank: int = 0,
                      world: int = 1) -> Iterator[list[dict]]:
        """Per optimizer step from ``start``, its batch as consecutive micro-batches of ``micro`` rows (fewer in
        an epoch's short last batch), each collated (padded to its own widest row) and sharded on its own.

        The plan's ``batch_size`` is the effective batch (``micro`` × accumulation steps), so the rows of a step
        and their order are those of a run whose batch_size is that effective batch: the same seeded
        permutation, the same epoch boundaries. That is what makes accumulated runs comparable (and equal)."""
        step = start
        while True:
            rows = self.indices(step)
            out = []
            for i in range(0, len(rows), micro):
                batch = collate([examples[j] for j in rows[i:i + micro]], pad_id)
                out.append(to_device(shard(batch, rank, world) if world > 1 else batch, device))
            yield out
            step += 1


def shard(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    """One rank's rows of a global batch: contiguous, sizes differing by at most one (an epoch's short last
    batch can leave a rank none). Padded to the global batch's width, so every row sees the same input as
    in a single-process run."""
    rows = torch.arange(batch["input_ids"].shape[0]).tensor_split(world)[rank]  # (rows of this rank,)
    return {k: v[rows] for k, v in batch.items()}


def loss_items(batch: dict[str, torch.Tensor]) -> int:
    """What the model's mean loss averages over: labelled next tokens (causal LM), or rows (classification)."""
    labels = batch["labels"]
    if labels.dim() == 1:
        return int(labels.shape[0])
    return int((labels[:, 1:] != IGNORE).sum())


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def loss_fn(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over labelled tokens (causal LM) or examples (classification)."""
    return model(**batch).loss


def normalize_answer(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().casefold())


def choice_examples(tok, prompt: str, choices: list[str], max_len: int) -> list[Example]:
    """One sequence per choice: the prompt (unlabelled) then the choice (labelled), no EOS."""
    return [Example(*encode_pair(tok, *_join(prompt, c), max_len, add_eos=False)[:2]) for c in choices]


@torch.no_grad()
def sequence_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per sequence of a collated batch, the sum of its labelled tokens' log-probabilities, (batch,)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1)  # (batch, seq-1, vocab)
    tgt = batch["labels"][:, 1:]
    picked = logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (tgt != IGNORE)
    return picked.sum(-1)


def choice_logprobs(model, tok, prompt: str, choices: list[str], max_len: int, device) -> list[float]:
    """Sum of token log-probabilities of each choice after the prompt."""
    batch = to_device(collate(choice_examples(tok, prompt, choices, max_len), tok.pad_token_id), device)
    return sequence_logprobs(model, batch).tolist()


@torch.no_grad()
def generate_answer(model, tok, prompt_ids: list[int], max_new: int, device) -> str:
    ids = torch.tensor([prompt_ids], device=device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                         do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, len(prompt_ids):], skip_special_tokens=True)


def evaluate(model, tok, enc: Encoded, fmt: str, batch_size: int, max_len: int, device,
             check_stop=lambda: None) -> dict[str, float | None]:
    """eval_loss over all rows; eval_accuracy by argmax (classification), log-likelihood over choices
    (multiple_choice) or exact match of a greedy answer after normalisation (completions, chat)."""
    was_training = model.training
    model.eval()
    pad = tok.pad_token_id
    total_loss, total_n, correct = 0.0, 0, 0
    try:
        with torch.no_grad():
            exs = enc.examples
            for i in range(0, len(exs), batch_size):
                check_stop()
                chunk = exs[i:i + batch_size]
                batch = to_device(collate(chunk, pad), device)
                out = model(**batch)
                n = loss_items(batch)
                total_loss += float(out.loss) * max(n, 1)
                total_n += max(n, 1)
                if fmt == "classification":
                    correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
            for ex in exs if fmt != "classification" else []:
                check_stop()
                correct += _score_row(model, tok, ex, fmt, max_len, device)
    finally:
        model.train(was_training)
    n_rows = len(enc.examples)
    return {"eval_loss": total_loss / max(total_n, 1), "eval_accuracy": correct / n_rows if n_rows else None}


def _score_row(model, tok, ex: Example, fmt: str, max_len: int, device) -> int:
    row = ex.row
    if fmt == "multiple_choice":
        lp = choice_logprobs(model, tok, row["prompt"], row["choices"], max_len, device)
        return int(max(range(len(lp)), key=lp.__getitem__) == row["label"])
    if fmt == "prompt_completion":
        prompt_ids = tok(row["prompt"], add_special_tokens=True)["input_ids"][-max_len:]
        gold = row["completion"]
    else:  # chat: answer the last assistant turn from the conversation before it
        msgs = row["messages"]
        last = max(i for i, m in enumerate(msgs) if is_trained_turn(m))
        prompt_ids = chat_ids(tok, template_messages(msgs[:last]), True)[-max_len:]
        gold = msgs[last]["content"]
    max_new = len(tok(gold, add_special_tokens=False)["input_ids"]) + 2
    return int(normalize_answer(generate_answer(model, tok, prompt_ids, max_new, device)) == normalize_answer(gold))
