"""Continuing a finished run (``TrainSpec.init_from``): the parent adapter, the checks that it fits this run,
and the lineage the manifest records.

Why the checks: the child starts as the parent's adapted model, so its base model, method, targets and budget
must be the parent's (another base or budget would not hold the parent's tensors); a classification head keeps
the parent's label names, in the parent's order, since its rows are those labels. Every refusal names
``init_from`` (or the labels), as the API does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smt_core.artifacts import ADAPTER, HEAD_PREFIX, load_adapter
from smt_core.manifest import file_sha256
from smt_core.methods.options import ConfigError

__all__ = ["ConfigError", "Parent", "check_fits", "check_labels", "open_parent"]


@dataclass
class Parent:
    """The parent adapter, read once on the CPU."""

    tensors: dict[str, torch.Tensor]  # the method's (head tensors split off)
    head: dict[str, torch.Tensor]  # parameter name in the freshly loaded model → value
    manifest: dict[str, Any]
    sha256: str
    job: str | None

    def lineage(self) -> dict[str, Any]:
        """What the child's manifest records under ``init_from``."""
        return {"job": self.job, "adapter_sha256": self.sha256}


def open_parent(folder: str | Path, job: str | None = None) -> Parent:
    """The adapter in ``folder``; a ConfigError naming init_from when there is none to read."""
    try:
        tensors, manifest = load_adapter(folder)
    except (OSError, ValueError) as exc:
        raise ConfigError("init_from", f"cannot read the parent adapter: {exc}") from exc
    head = {k[len(HEAD_PREFIX):]: v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    rest = {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}
    return Parent(rest, head, manifest, file_sha256(str(Path(folder) / ADAPTER)), job)


def check_labels(parent: Parent, fmt: str, label_names: list[str] | None) -> list[str] | None:
    """The label names the child trains with: the parent's, in its order (its head's rows). The child's data
    must be of the parent's task, and any label the parent never saw is refused by name."""
    task = "classification" if fmt == "classification" else "causal_lm"
    if task != parent.manifest.get("task", "causal_lm"):
        raise ConfigError("init_from", f"the parent was trained for {parent.manifest.get('task')}, "
                          f"this data is {task}")
    if task != "classification":
        return label_names
    known = list(parent.manifest.get("label_names") or [])
    new = sorted(set(label_names or []) - set(known))
    if new:
        raise ConfigError("init_from", f"labels {new} are not among the parent's {known}: its classification "
                          "head has no rows for them")
    return known


def check_fits(parent: Parent, *, method: str, model_id: str, model_sha256: str | None, targets: list[str],
               budget_params: int | None) -> None:
    """Same base model, method, targets and budget as the parent, else a ConfigError naming init_from."""
    m = parent.manifest
    base = m.get("base_model") or {}
    wrong = []
    if m.get("method") != method:
        wrong.append(f"method {m.get('method')!r} (this run: {method!r})")
    if base.get("id") != model_id and not (base.get("sha256") and base.get("sha256") == model_sha256):
        wrong.append(f"base model {base.get('id')!r} (this run: {model_id!r})")
    elif base.get("sha256") and model_sha256 and base.get("sha256") != model_sha256:
        wrong.append(f"base model weights {str(base.get('sha256'))[:12]}… differ from this run's")
    if sorted(m.get("targets") or []) != sorted(targets):
        wrong.append(f"targets {','.join(m.get('targets') or [])} (this run: {','.join(targets)})")
    if m.get("budget_params") != budget_params:
        wrong.append(f"budget of {m.get('budget_params')} parameters (this run: {budget_params})")
    if wrong:
        raise ConfigError("init_from", "the parent differs: " + "; ".join(wrong))
