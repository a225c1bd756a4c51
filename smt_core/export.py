"""``sparsetune export --format peft-shira``: a sparse delta as a PEFT SHiRA adapter (METHODS.md §4).

SHiRA holds exactly r·(in + out) entries per module for one global r, so r = max over modules of
ceil(nnz / (in + out)) and every module is padded with zero-valued entries. The adapter is built with PEFT
itself and saved by its own ``save_pretrained``, so stock ``PeftModel.from_pretrained`` loads it. PEFT
refuses r·(in + out) > in·out and supports only ``torch.nn.Linear``: such adapters are refused here with
the module named (merge is the export every tool can load).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from peft import ShiraConfig, get_peft_model
from torch import nn

from smt_core.adapters import open_adapter


class ExportError(ValueError):
    """The adapter cannot be expressed in the requested format; the message names the module."""


def _padded(indices: torch.Tensor, values: torch.Tensor, rows: int, cols: int, n: int):
    """Add zero-valued entries at unused positions until there are ``n``; row-major order."""
    used = torch.zeros(rows, cols, dtype=torch.bool)
    used[indices[0], indices[1]] = True
    extra = torch.nonzero(~used)[: n - indices.shape[1]].t()  # (2, pad)
    idx = torch.cat([indices, extra], 1)
    vals = torch.cat([values.float(), torch.zeros(extra.shape[1])])
    order = torch.argsort(idx[0] * cols + idx[1])
    return idx[:, order].to(torch.int), vals[order]


def export_shira(adapter_dir: str | Path, out_dir: str | Path, model: str | None = None) -> Path:
    base, tok, sites, method, tensors, manifest = open_adapter(adapter_dir, model)
    deltas = method.sparse_deltas(base, sites, tensors, manifest["method_info"])
    if deltas is None:
        raise ExportError(f"export: method {manifest['method']} has a dense delta; SHiRA holds sparse deltas "
                          "only (smt, snell) — use `sparsetune merge` instead")
    by_name = {s.name: s for s in sites}
    for name in deltas:
        if not isinstance(by_name[name].module, nn.Linear):
            raise ExportError(f"export: module {name} is a {type(by_name[name].module).__name__}; PEFT SHiRA "
                              "supports only torch.nn.Linear — use `sparsetune merge` instead")
    r = max(1, max(math.ceil(v.numel() / (by_name[n].in_features + by_name[n].out_features))
                   for n, (_, v) in deltas.items()))
    for name in deltas:
        s = by_name[name]
        if r * (s.in_features + s.out_features) > s.in_features * s.out_features:
            raise ExportError(
                f"export: SHiRA cannot hold this delta: module {name} ({s.out_features}×{s.in_features}) would "
                f"need r·(in+out) = {r * (s.in_features + s.out_features)} entries > in·out; r = {r} is set by "
                "the densest module — use `sparsetune merge` instead")
    # a trained classification head travels in modules_to_save ("head.classifier.weight" → "classifier")
    head_modules = sorted({k[len("head."):].rsplit(".", 1)[0] for k in manifest.get("head_tensors", [])})
    cfg = ShiraConfig(r=r, target_modules=sorted(deltas), init_weights=True,
                      modules_to_save=head_modules or None)
    peft_model = get_peft_model(base, cfg)
    for name, (idx, vals) in deltas.items():
        layer = peft_model.base_model.model.get_submodule(name)
        s = by_name[name]
        n = r * (s.in_features + s.out_features)
        pidx, pvals = _padded(idx.long(), vals, s.out_features, s.in_features, n)
        layer.shira_indices["default"] = pidx.to(layer.weight.device)
        with torch.no_grad():
            layer.shira_weight["default"].copy_(pvals / layer.scaling["default"])
    out = Path(out_dir)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(out)
    return out
