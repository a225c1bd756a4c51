"""Put a saved adapter back on its base model: for inference, merge and export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from smt_core.artifacts import HEAD_PREFIX, load_adapter
from smt_core.base import Method
from smt_core.models import load_model, load_tokenizer, resolve_model
from smt_core.registry import get_method
from smt_core.targets import Site, find_sites


def load_base(manifest: dict[str, Any], model: str | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer) of the adapter's base (or ``model``), with a trained head copied in later.
    ``dtype`` (default fp32): e.g. bf16 to run the adapter as a bf16-precision job trained it."""
    ref = resolve_model(model or manifest["base_model"]["id"])
    tok = load_tokenizer(ref)
    base, _ = load_model(ref, manifest.get("task", "causal_lm"), manifest.get("label_names"), dtype,
                         pad_token_id=tok.pad_token_id)
    base.eval()
    return base, tok


def split_head(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    head = {k[len(HEAD_PREFIX):]: v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    rest = {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}
    return rest, head


def copy_head(model: nn.Module, head: dict[str, torch.Tensor]) -> None:
    named = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in head.items():
            if k not in named:
                raise ValueError(f"adapter: head tensor {k} does not exist in this model")
            named[k].copy_(v.to(named[k].dtype))


def method_for(manifest: dict[str, Any]) -> Method:
    return get_method(manifest["method"]).from_options(manifest.get("method_options"))


def open_adapter(adapter_dir: str | Path, model: str | None = None, dtype: torch.dtype | None = None):
    """(base model, tokenizer, sites, method, adapter tensors, manifest); the model is not adapted yet."""
    tensors, manifest = load_adapter(adapter_dir)
    base, tok = load_base(manifest, model, dtype)
    rest, head = split_head(tensors)
    copy_head(base, head)
    sites: list[Site] = find_sites(base, manifest["targets"])
    return base, tok, sites, method_for(manifest), rest, manifest


def load_adapted(adapter_dir: str | Path, model: str | None = None):
    """The adapted model ready for inference, its tokenizer and the manifest."""
    base, tok, sites, method, tensors, manifest = open_adapter(adapter_dir, model)
    adapted = method.load(base, sites, tensors, manifest["method_info"])
    adapted.eval()
    return adapted, tok, manifest
