"""The native adapter: ``adapter.safetensors`` (tensors, manifest in its metadata) + ``adapter_config.json``
(the same manifest, sorted and indented) + ``metrics.json``. No pickle anywhere.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ADAPTER = "adapter.safetensors"
CONFIG = "adapter_config.json"
METRICS = "metrics.json"
MANIFEST_KEY = "sparsetune_manifest"
HEAD_PREFIX = "head."
KNOWN_KEYS = {"format", "engine_version", "libraries", "method", "method_options", "method_info", "targets",
              "budget", "budget_params", "trainable_params", "delta_nonzeros", "base_model", "task", "dataset",
              "seed", "hyperparameters", "label_names", "metrics", "head_tensors", "created_at"}
log = logging.getLogger(__name__)


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


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def save_adapter(out_dir: str | Path, tensors: dict[str, torch.Tensor], manifest: dict[str, Any]) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tmp = out / f".{ADAPTER}.tmp"
    save_file(tensors, str(tmp), metadata={MANIFEST_KEY: json.dumps(manifest, sort_keys=True)})
    os.replace(tmp, out / ADAPTER)
    _atomic_write(out / CONFIG, dumps(manifest))
    _atomic_write(out / METRICS, dumps(manifest.get("metrics", {})))
    return {ADAPTER: out / ADAPTER, CONFIG: out / CONFIG, METRICS: out / METRICS}


def load_adapter(adapter_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and manifest; unknown manifest keys are a warning (newer engines may add some)."""
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
        manifest = json.loads((folder / CONFIG).read_text())
    elif MANIFEST_KEY in meta:
        manifest = json.loads(meta[MANIFEST_KEY])
    else:
        raise ValueError(f"adapter: {folder} has no manifest ({CONFIG} or safetensors metadata)")
    unknown = sorted(set(manifest) - KNOWN_KEYS)
    if unknown:
        log.warning("adapter manifest has unknown keys %s; ignoring them", ", ".join(unknown))
    return tensors, manifest
