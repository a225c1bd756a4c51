"""The memory estimate as the service computes it: the model's config, the token lengths of the caller's
training dataset (with the model's own tokenizer where the API host has it), and the device it runs on.

Torch-free: tokens are counted with the ``tokenizers`` library on the model folder's ``tokenizer.json``
(SmolLM2's appears under ``$SPARSETUNE_HOME/models/`` once a worker on this host has converted it; MiniLM's
ships in its package; a ``SPARSETUNE_MODELS`` folder may hold one). Without it, rows are measured in
characters (``smt_core.estimate.CHARS_PER_TOKEN``). A dataset is tokenized once per (content, tokenizer)
and kept in a small in-process cache: uploads never change, so the entry never goes stale.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import catalog
from service.models import Blob, BlobChunk, Dataset
from smt_core.estimate import TokenStats, estimate, token_stats_of_jsonl
from smt_core.hyperparameters import GRADIENT_CHECKPOINTING

CACHE_ENTRIES = 256
_cache: OrderedDict[tuple[str, str], TokenStats] = OrderedDict()
_lock = threading.Lock()


def tokenizer_folder(model: str) -> Path | None:
    """The folder holding the model's ``tokenizer.json`` on this host, or None."""
    source = catalog.allowed_models().get(model)
    if source is None:
        return None
    candidates: list[Path] = []
    if source == "smollm2-135m":
        home = Path(os.environ.get("SPARSETUNE_HOME", Path.home() / ".sparsetune"))
        candidates.append(home / "models" / "smollm2-135m")  # written by the engine's GGUF conversion
    elif source == "minilm-l6":
        spec = importlib.util.find_spec(catalog.PACKAGED["minilm-l6"])  # locate only, never import
        if spec and spec.origin:
            candidates.append(Path(os.path.dirname(spec.origin)) / "model")
    else:
        candidates.append(Path(source))
    return next((c for c in candidates if (c / "tokenizer.json").is_file()), None)


def _dataset_bytes(session: Session, ds: Dataset) -> bytes:
    blob = session.get(Blob, ds.blob_id)
    if blob is None or not blob.complete:
        return b""
    chunks = session.scalars(select(BlobChunk.data).where(BlobChunk.blob_id == ds.blob_id).order_by(BlobChunk.seq))
    return b"".join(bytes(c) for c in chunks)


def dataset_tokens(session: Session, ds: Dataset, model: str) -> TokenStats:
    """Longest and shortest row of ``ds`` in ``model``'s tokens (cached per dataset content and tokenizer)."""
    folder = tokenizer_folder(model)
    key = (ds.sha256, str(folder) if folder else "")
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    stats = token_stats_of_jsonl(_dataset_bytes(session, ds), folder)
    with _lock:
        _cache[key] = stats
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return stats


def for_model(model: str, method: str, budget: Any, targets: list[str], batch_size: int, max_seq_len: int,
              options: dict[str, Any], *, device: str = "cpu", tokens: TokenStats | None = None,
              task: str | None = None,
              gradient_checkpointing: bool = GRADIENT_CHECKPOINTING.default) -> dict[str, Any] | None:
    """``smt_core.estimate.estimate`` for an allowed model; None when the API has no config.json for it."""
    cfg = catalog.model_config(model)
    if cfg is None:
        return None
    return estimate(cfg, method, budget, targets, batch_size, max_seq_len, options, device=device, tokens=tokens,
                    task=task, gradient_checkpointing=gradient_checkpointing)


def task_of(ds: Dataset | None) -> str | None:
    """The dataset's task: classification rows train a head; the other formats a causal LM's loss."""
    if ds is None:
        return None
    return "classification" if ds.format == "classification" else "causal_lm"
