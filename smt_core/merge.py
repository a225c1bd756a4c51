"""``sparsetune merge``: write base + adapter as a standard HF folder (safetensors) any tool can load."""

from __future__ import annotations

import json
from pathlib import Path

from smt_core.adapters import open_adapter
from smt_core.manifest import dumps


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, model: str | None = None) -> Path:
    base, tok, sites, method, tensors, manifest = open_adapter(adapter_dir, model)
    method.merge(base, sites, tensors, manifest["method_info"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    info = {"merged_from": {k: manifest.get(k) for k in ("method", "base_model", "targets", "trainable_params")}}
    (out / "sparsetune_merge.json").write_text(dumps(json.loads(json.dumps(info, default=str))))
    return out
