"""The adapter manifest: what a run trained, on what, and how — written and read here only.

It travels twice with every adapter (in the safetensors metadata and as ``adapter_config.json``), so a file
alone says how to rebuild the model. Readers tolerate keys they do not know (a newer engine may add some).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

FORMAT = "sparsetune-adapter/1"
KNOWN_KEYS = {"format", "engine_version", "libraries", "method", "method_options", "method_info", "targets",
              "budget", "budget_params", "trainable_params", "delta_nonzeros", "base_model", "task", "dataset",
              "seed", "hyperparameters", "label_names", "metrics", "head_tensors", "created_at",
              "init_from"}
log = logging.getLogger(__name__)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class DataFacts:
    """What the manifest says of the data: its format, the files' hashes and the rows used."""

    format: str
    train_path: str
    train_rows: int
    eval_path: str | None
    eval_rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "train_sha256": file_sha256(self.train_path), "train_rows": self.train_rows,
                "eval_sha256": file_sha256(self.eval_path) if self.eval_path else None,
                "eval_rows": self.eval_rows, "held_out": self.eval_path is None and bool(self.eval_rows)}


def build(*, libraries: dict[str, str], method: str, method_options: dict[str, Any], method_info: dict[str, Any],
          targets: list[str], budget: Any, budget_params: int | None, report: dict[str, Any],
          base_model: dict[str, Any], task: str, data: DataFacts, seed: int, hyperparameters: dict[str, Any],
          label_names: list[str] | None, head_tensors: list[str], metrics: dict[str, Any],
          init_from: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of a finished run (every key in ``KNOWN_KEYS``); ``init_from`` is the lineage of a
    continued run (``{"job", "adapter_sha256"}`` of its parent), None for a run from the base model."""
    return {
        "format": FORMAT,
        "engine_version": libraries["sparsetune"],
        "libraries": libraries,
        "method": method,
        "method_options": method_options,
        "method_info": method_info,
        "targets": list(targets),
        "budget": budget,
        "budget_params": budget_params,
        "trainable_params": report["trainable_params"],
        "delta_nonzeros": report.get("delta_nonzeros"),
        "base_model": base_model,
        "task": task,
        "dataset": data.to_dict(),
        "seed": seed,
        "hyperparameters": hyperparameters,
        "label_names": label_names,
        "head_tensors": sorted(head_tensors),
        "metrics": metrics,
        "created_at": int(time.time()),
        "init_from": init_from,
    }


def dumps(manifest: dict[str, Any], indent: int | None = 2) -> str:
    """Sorted keys: the same manifest is the same bytes (the JSON file is indented, the metadata not)."""
    if indent is None:
        return json.dumps(manifest, sort_keys=True)
    return json.dumps(manifest, indent=indent, sort_keys=True) + "\n"


def loads(text: str) -> dict[str, Any]:
    """A manifest read back; unknown keys are a warning, not an error."""
    manifest = json.loads(text)
    unknown = sorted(set(manifest) - KNOWN_KEYS)
    if unknown:
        log.warning("adapter manifest has unknown keys %s; ignoring them", ", ".join(unknown))
    return manifest
