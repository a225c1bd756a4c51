"""Data parallel over several processes with torch.distributed: who am I, and the few collectives we need.

Every helper is a no-op in a single process (no process group), so the trainer and the methods call them
unconditionally and a one-device run is exactly what it was. State lives in torch.distributed itself
(``dist.is_initialized()``, ``get_rank()``…); this module keeps none of its own.

Backend: gloo for CPU runs (how the tests run), nccl when the run's device is CUDA. Nothing here pickles:
objects cross ranks as JSON bytes in a uint8 tensor (``dist.broadcast_object_list`` would pickle).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from typing import Any

import torch
import torch.distributed as dist

from smt_core.callbacks import Callbacks, Cancelled

JOIN_KEY = "sparsetune/joined"  # each peer adds 1 once connected, so the launcher can watch the rendezvous
# Collectives wait this long for a slow peer. Rank 0 evaluates and writes checkpoints alone while the
# others wait in their next collective, so it must cover the longest intermediate evaluation.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
STORE_TIMEOUT = datetime.timedelta(minutes=5)
BUCKET_BYTES = 32 << 20  # all-reduce in flat buckets: one call per ~32 MB, not one per tensor


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Rank 0 alone writes checkpoints and artifacts, evaluates and calls the listening callbacks."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", rank()))


def default_device_name(name: str | None) -> str:
    return name if name is not None else ("cuda" if torch.cuda.is_available() else "cpu")


def device_for(name: str | None) -> torch.device:
    """This rank's device in a multi-process run: ``cuda:LOCAL_RANK`` on GPU (one process per visible
    device), else the CPU."""
    name = default_device_name(name)
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda":
        raise ValueError(f"device: {name!r}; with num_devices > 1 give 'cuda' (one process per GPU) or 'cpu'")
    torch.cuda.set_device(local_rank())
    return torch.device("cuda", local_rank())


def backend_for(name: str | None) -> str:
    return "nccl" if default_device_name(name).startswith("cuda") else "gloo"


def started_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) started this process as one of several ranks."""
    return "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(rank_: int, world: int, store: dist.Store, backend: str) -> None:
    """Join the process group through ``store`` (rank 0's TCPStore)."""
    dist.init_process_group(backend, store=store, rank=rank_, world_size=world, timeout=COLLECTIVE_TIMEOUT)


def init_from_env(backend: str) -> None:
    """Join from the variables torchrun sets (and our launcher too): RANK, WORLD_SIZE, MASTER_ADDR/PORT."""
    rank_, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                          timeout=STORE_TIMEOUT)
    store.add(JOIN_KEY, 1)
    init(rank_, world, store, backend)


def teardown() -> None:
    if is_active():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """nccl reduces CUDA tensors only; gloo takes CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---- collectives -------------------------------------------------------------------------------------
def all_reduce_(tensors: list[torch.Tensor], op: str = "sum") -> None:
    """Sum (or average) ``tensors`` across ranks in place; every rank must pass the same shapes in the same
    order. Tensors travel in flat buckets of one dtype and device."""
    if world_size() == 1 or not tensors:
        return
    if op not in ("sum", "mean"):
        raise ValueError(f"op: expected sum or mean, got {op!r}")
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        for bucket in _buckets(group):
            flat = torch.cat([b.reshape(-1) for b in bucket])  # (Σ numel,)
            dist.all_reduce(flat)
            if op == "mean":
                flat /= world_size()
            offset = 0
            for b in bucket:
                b.copy_(flat[offset:offset + b.numel()].view_as(b))
                offset += b.numel()


def _buckets(tensors: list[torch.Tensor]):
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        n = t.numel() * t.element_size()
        if bucket and size + n > BUCKET_BYTES:
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += n
    if bucket:
        yield bucket


def sum_scalars(values: list[float]) -> list[float]:
    """Sum a few numbers across ranks (float64, so token counts stay exact)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def sync_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum the trainable parameters' gradients over ranks. Losses are pre-weighted by each rank's share of
    the global batch (see smt_core.trainer.amp_loss_fn), so the sum is the single-process gradient. A rank whose
    shard was empty has no gradient: it contributes zeros, so every rank steps the optimizer alike."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    all_reduce_([p.grad for p in params])


def broadcast_params(params: list[torch.Tensor]) -> None:
    """Copy rank 0's values into every rank (fresh adapters start identical whatever each rank's RNG did)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for p in params:
            buf = p.data.contiguous()
            dist.broadcast(buf, src=0)
            if buf is not p.data:
                p.data.copy_(buf)


def broadcast_json(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s JSON-able ``obj`` on every rank, carried as UTF-8 bytes (no pickle)."""
    if world_size() == 1:
        return obj
    dev = _comm_device()
    data = json.dumps(obj).encode() if rank() == src else b""
    n = torch.tensor([len(data)], dtype=torch.long, device=dev)
    dist.broadcast(n, src)
    if rank() == src:
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)
    else:
        buf = torch.empty(int(n.item()), dtype=torch.uint8, device=dev)
    dist.broadcast(buf, src)
    return json.loads(buf.cpu().numpy().tobytes())


# ---- stop requests and replica checks ------------------------------------------------------------------
class SharedStop(Callbacks):
    """The caller's callbacks, with ``check_stop`` made collective: any rank's stop (in practice rank 0's,
    the only one with listeners) stops every rank at the same step, so none waits alone in a collective.

    Only call ``check_stop`` where every rank does, the same number of times (training and warm-up steps);
    rank 0's solo evaluation checks the caller's own ``check_stop`` instead."""

    def __init__(self, inner: Callbacks) -> None:
        super().__init__()
        self.inner = inner

    def add(self, event, fn):
        self.inner.add(event, fn)
        return self

    def fire(self, event: str, **payload: Any) -> None:
        self.inner.fire(event, **payload)

    def check_stop(self) -> None:
        flag = 0.0
        try:
            self.inner.check_stop()
        except Cancelled as exc:
            flag = 2.0 if exc.checkpoint else 1.0
        t = torch.tensor([flag], device=_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if t.item() > 0:
            raise Cancelled("run cancelled", checkpoint=t.item() == 2.0)


def shared_callbacks(cb: Callbacks) -> Callbacks:
    return SharedStop(cb) if world_size() > 1 else cb


def _digest(t: torch.Tensor) -> str:
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()  # the bytes, not a copy
    return hashlib.sha256(data).hexdigest()


def check_replicas(tensors: dict[str, torch.Tensor]) -> None:
    """Raise on every rank if any rank's trained tensors differ from rank 0's (bit for bit).

    Each rank applies the same all-reduced gradient to the same starting values, so the replicas must be
    identical; a difference means a rank trained other blocks or missed an update."""
    if world_size() == 1:
        return
    mine = {k: _digest(v) for k, v in sorted(tensors.items())}
    reference = broadcast_json(mine)
    differing = sorted(k for k in set(mine) | set(reference) if mine.get(k) != reference.get(k))
    flags = torch.zeros(world_size(), device=_comm_device())
    flags[rank()] = float(bool(differing))
    dist.all_reduce(flags)
    bad = [r for r, f in enumerate(flags.tolist()) if f]
    if bad:
        here = f"; here (rank {rank()}): {', '.join(differing[:3])}" if differing else ""
        raise RuntimeError(f"data-parallel replicas diverged: rank(s) {bad} hold other trained tensors "
                           f"than rank 0{here}")
