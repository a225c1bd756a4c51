"""``sparsetune merge``: write base + adapter as a standard HF folder (safetensors) any tool can load.

Merging is idempotent: the folder's ``sparsetune_merge.json`` lists the sha256 of every adapter file whose
delta its weights hold, so merging an adapter into a folder that already holds it writes the weights
unchanged (merging twice equals merging once) instead of adding the delta a second time. Another adapter
merged on top is applied and added to the list.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

from torch import nn

from smt_core.adapters import open_adapter
from smt_core.artifacts import ADAPTER
from smt_core.manifest import dumps

MERGE_INFO = "sparsetune_merge.json"


def adapter_sha256(adapter_dir: str | Path) -> str:
    """sha256 of the adapter's tensor file (its manifest rides in the same file's metadata)."""
    h = hashlib.sha256()
    with (Path(adapter_dir) / ADAPTER).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def merged_adapters(model: nn.Module) -> list[str]:
    """The adapters already merged into the folder ``model`` was loaded from (none for a plain base)."""
    folder = getattr(model, "name_or_path", "")
    path = Path(folder) / MERGE_INFO if folder else None
    if path is None or not path.is_file():
        return []
    return list(json.loads(path.read_text()).get("adapters_sha256", []))


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, model: str | None = None) -> Path:
    base, tok, sites, method, tensors, manifest = open_adapter(adapter_dir, model)
    digest = adapter_sha256(adapter_dir)
    held = merged_adapters(base)
    if digest in held:
        warnings.warn(f"merge: {base.name_or_path} already holds adapter {digest[:12]}…; its weights are "
                      "written unchanged (merging twice equals merging once)", stacklevel=2)
    else:
        method.merge(base, sites, tensors, manifest["method_info"])
        held.append(digest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    info = {"merged_from": {k: manifest.get(k) for k in ("method", "base_model", "targets", "trainable_params")},
            "adapters_sha256": held}
    (out / MERGE_INFO).write_text(dumps(json.loads(json.dumps(info, default=str))))
    return out
