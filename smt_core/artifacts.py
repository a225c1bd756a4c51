"""The native adapter's files: ``adapter.safetensors`` (tensors, manifest in its metadata) +
``adapter_config.json`` (the same manifest, sorted and indented) + ``metrics.json``. No pickle anywhere.
What the manifest holds is :mod:`smt_core.manifest`'s business.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from smt_core import manifest as manifests

ADAPTER = "adapter.safetensors"
# the best evaluation's adapter (TrainSpec.metric_for_best), beside the last one: the same format, its own manifest
BEST = "adapter-best.safetensors"
CONFIG = "adapter_config.json"
METRICS = "metrics.json"
MANIFEST_KEY = "sparsetune_manifest"
HEAD_PREFIX = "head."


def library_versions() -> dict[str, str]:
    import peft
    import safetensors
    import transformers

    from smt_core import __version__

    return {"sparsetune": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "safetensors": safetensors.__version__}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], manifest: dict[str, Any]) -> Path:
    """One self-describing safetensors file (the manifest in its metadata), written whole or not at all."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={MANIFEST_KEY: manifests.dumps(manifest, indent=None)})
    os.replace(tmp, path)
    return path


def save_adapter(out_dir: str | Path, tensors: dict[str, torch.Tensor], manifest: dict[str, Any]) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / ADAPTER, tensors, manifest)
    _atomic_write(out / CONFIG, manifests.dumps(manifest))
    _atomic_write(out / METRICS, manifests.dumps(manifest.get("metrics", {})))
    return {ADAPTER: out / ADAPTER, CONFIG: out / CONFIG, METRICS: out / METRICS}


def load_adapter(adapter_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and manifest (from the JSON file, else the safetensors metadata)."""
    folder = Path(adapter_dir)
    path = folder / ADAPTER
    if not path.is_file():
        raise ValueError(f"adapter: no {ADAPTER} in {folder}")
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        for key in fh.keys():
            tensors[key] = fh.get_tensor(key)
    if (folder / CONFIG).is_file():
        return tensors, manifests.loads((folder / CONFIG).read_text())
    if MANIFEST_KEY in meta:
        return tensors, manifests.loads(meta[MANIFEST_KEY])
    raise ValueError(f"adapter: {folder} has no manifest ({CONFIG} or safetensors metadata)")
