"""Loaded base models and the adapters put on them, within one memory limit (least recently used first out).

A :class:`ModelHost` is one base model (per task and label set: a classification head is part of the model)
with its tokenizer; adapters are attached to it through each method's ``served_adapter`` hook
(smt_core.serving) and switched with :meth:`ModelHost.use`, which the engine calls before every step.
Only the engine thread touches a host once it is registered; loading runs beside it (``load_host``,
``read_adapter``) so a model being read does not stall the streams already running.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from inference.requests import InferenceError, Target
from smt_core.adapters import copy_head, method_for, split_head
from smt_core.artifacts import load_adapter
from smt_core.models import load_model, load_tokenizer, model_config, resolve_model
from smt_core.serving import Host, ServedAdapter
from smt_core.targets import Site, find_sites

HostKey = tuple[str, str, tuple[str, ...]]  # (base, task, label names)


@dataclass
class AdapterFile:
    """An adapter read from disk, not yet attached: its manifest, tensors and head."""

    name: str
    manifest: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]

    @property
    def task(self) -> str:
        return self.manifest.get("task", "causal_lm")

    @property
    def host_key(self) -> HostKey:
        return host_key(self.manifest["base_model"]["id"], self.task, self.manifest.get("label_names"))


def host_key(base: str, task: str = "causal_lm", labels: list[str] | None = None) -> HostKey:
    return (base, task, tuple(labels or ()))


def read_adapter(target: Target) -> AdapterFile:
    """Read ``target``'s adapter folder (any thread)."""
    assert target.adapter and target.adapter_dir
    try:
        tensors, manifest = load_adapter(target.adapter_dir)
    except (OSError, ValueError) as exc:
        raise InferenceError(404, f"adapter of {target.adapter}: {exc}", "model") from None
    manifest.setdefault("base_model", {})["id"] = target.base  # the service names the base, not the file
    rest, head = split_head(tensors)
    return AdapterFile(target.adapter, manifest, rest, head)


class WithHead(ServedAdapter):
    """A classification job's adapter: its trained head is copied in while active and the host's put back."""

    def __init__(self, inner: ServedAdapter, head: dict[str, torch.Tensor]) -> None:
        self.inner, self.head = inner, head
        self.nbytes = inner.nbytes + sum(t.nbytes for t in head.values())
        self._saved: dict[str, torch.Tensor] = {}

    def attach(self, host: Host) -> None:
        self.inner.attach(host)

    def activate(self, host: Host) -> nn.Module:
        module = self.inner.activate(host)
        named = dict(host.model.named_parameters())  # the head's own names (a PeftModel prefixes its own)
        self._saved = {k: named[k].detach().clone() for k in self.head if k in named}
        copy_head(host.model, self.head)
        return module

    def deactivate(self, host: Host) -> None:
        model = host.model
        named = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in self._saved.items():
                named[k].copy_(v)
        self._saved = {}
        self.inner.deactivate(host)

    def detach(self, host: Host) -> None:
        self.inner.detach(host)


class ModelHost(Host):
    """One loaded base model, its tokenizer and the adapters attached to it."""

    def __init__(self, key: HostKey, model: nn.Module, tokenizer: Any, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.key, self.model, self.tokenizer, self.device, self.dtype = key, model, tokenizer, device, dtype
        self.peft_model = None
        self.adapters: OrderedDict[str, ServedAdapter] = OrderedDict()
        self.active: str | None = None
        self._running: nn.Module = model
        self.busy = 0  # batches and predictions using it now (never evicted while > 0)
        self.nbytes = sum(p.nbytes for p in model.parameters()) + sum(b.nbytes for b in model.buffers())

    @property
    def task(self) -> str:
        return self.key[1]

    @property
    def is_causal(self) -> bool:
        return self.task == "causal_lm"

    def sites(self, targets: list[str]) -> list[Site]:
        return find_sites(self.model, targets)

    def fresh_model(self) -> nn.Module:
        model, _ = _load(self.key, self.dtype, self.tokenizer)
        return model.to(self.device)

    def attach(self, file: AdapterFile) -> ServedAdapter:
        """Put a read adapter on this host (engine thread)."""
        manifest = file.manifest
        targets = list(manifest["targets"])
        method = method_for(manifest)
        try:
            served = method.served_adapter(file.name, self.sites(targets), file.tensors, manifest["method_info"],
                                           targets)
            if file.head:
                served = WithHead(served, file.head)
            served.attach(self)
        except ValueError as exc:
            raise InferenceError(422, f"adapter of {file.name} does not fit {self.key[0]}: {exc}", "model") from None
        self.adapters[file.name] = served
        return served

    def use(self, adapter: str | None) -> nn.Module:
        """Switch to ``adapter`` (None: the base alone) and return the module to run; a no-op when it is on,
        so a batch's steps in a row swap once."""
        if adapter != self.active:
            if self.active is not None:
                self.adapters[self.active].deactivate(self)
                self.active = None
            if adapter is not None:
                self.adapters.move_to_end(adapter)
                self._running = self.adapters[adapter].activate(self)
                self.active = adapter
        return self._running if self.active is not None else self.model

    def drop_adapter(self, name: str) -> None:
        if self.active == name:
            self.use(None)
        served = self.adapters.pop(name, None)
        if served is not None:
            served.detach(self)

    @property
    def adapter_bytes(self) -> int:
        return sum(a.nbytes for a in self.adapters.values())


def _load(key: HostKey, dtype: torch.dtype, tokenizer: Any) -> tuple[nn.Module, list[str]]:
    base, task, labels = key
    ref = resolve_model(base)
    return load_model(ref, task, list(labels) or None, dtype, pad_token_id=tokenizer.pad_token_id)


def load_host(key: HostKey, device: torch.device, dtype: torch.dtype | None = None) -> ModelHost:
    """Read a base model (any thread): bf16 on a GPU, fp32 on the CPU, unless ``dtype`` says."""
    base, task, _ = key
    try:
        ref = resolve_model(base)
        config = model_config(ref)
        tokenizer = load_tokenizer(ref)
    except ValueError as exc:
        raise InferenceError(404, str(exc), "model") from None
    from smt_core.models import is_encoder

    if task == "causal_lm" and is_encoder(config):
        raise InferenceError(422, f"model {base} is an encoder: it classifies and cannot write text; "
                             "use POST /v1/jobs/{id}/predict with a classification job", "model")
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    try:
        model, _ = _load(key, dtype, tokenizer)
    except ValueError as exc:
        raise InferenceError(422, str(exc), "model") from None
    model.to(device).eval()
    model.requires_grad_(False)
    return ModelHost(key, model, tokenizer, device, dtype)


class HostCache:
    """The loaded hosts, least recently used first, kept within ``memory_bytes`` (base weights + adapters)."""

    def __init__(self, memory_bytes: int | None) -> None:
        self.memory_bytes = memory_bytes
        self.hosts: OrderedDict[HostKey, ModelHost] = OrderedDict()
        self.lock = threading.Lock()  # the list is read by the heartbeat thread

    def get(self, key: HostKey) -> ModelHost | None:
        host = self.hosts.get(key)
        if host is not None:
            self.hosts.move_to_end(key)
        return host

    def add(self, host: ModelHost) -> None:
        with self.lock:
            self.hosts[host.key] = host
        self.fit()

    @property
    def used(self) -> int:
        return sum(h.nbytes + h.adapter_bytes for h in self.hosts.values())

    def fit(self, incoming: int = 0, keep: Callable[[ModelHost, str | None], bool] = lambda h, a: False) -> None:
        """Evict adapters, then whole hosts, least recently used first, until ``incoming`` more bytes fit.
        A host in use, or its active adapter, is never evicted."""
        if self.memory_bytes is None:
            return
        for host in list(self.hosts.values()):
            for name in list(host.adapters):
                if self.used + incoming <= self.memory_bytes:
                    return
                if name != host.active and not keep(host, name):
                    host.drop_adapter(name)
        for key, host in list(self.hosts.items()):
            if self.used + incoming <= self.memory_bytes:
                return
            if host.busy == 0 and not keep(host, None):
                with self.lock:
                    del self.hosts[key]

    def names(self) -> list[str]:
        with self.lock:
            return sorted({key[0] for key in self.hosts})

