"""Worker pools: which Celery queue a job goes to, picked by the job's estimated peak memory.

Pools are configured in settings (name -> memory one worker of the pool offers). A job goes to the smallest
pool its estimate fits, preferring a pool that has a live worker (a recent heartbeat), so a job whose pool
lost its last worker moves up to a larger one instead of waiting. With no pools configured there is one
unlimited pool, ``default``, on the plain queue name: the embedded single-machine setup.

The estimate depends on the device (on CUDA the frozen weights are bf16 and activations run under bf16
autocast), and pools are configured by memory alone, so a pool's device is what its workers report in their
heartbeats: ``cuda`` when its most recent worker found a GPU (nvidia-smi), ``cpu`` when it runs on the CPU.
A pool no worker has reported from yet gets the larger of the two estimates, so a job is never sent to a
pool too small for it on either device. Each pool is judged by its own device's estimate, and the job keeps
the estimate of the pool it is routed to (``estimated_memory``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import estimates
from service.models import Job, Worker
from service.settings import Settings, get_settings
from service.states import GONE, WorkerKind
from smt_core.estimate import DEVICES, TokenStats

Peak = int | None | Mapping[str, int | None]  # one estimate, or one per pool name (each on its own device)

DEFAULT_POOL = "default"


@dataclass(frozen=True)
class Pool:
    name: str
    memory: int | None  # bytes per device one worker offers; None = unlimited
    queue: str
    devices: int | None = 1  # devices one worker sees (a job's num_devices must fit); None = any (CPU)


def configured(settings: Settings | None = None) -> list[Pool]:
    """The pools, smallest first."""
    settings = settings or get_settings()
    if not settings.pools:
        return [Pool(DEFAULT_POOL, None, settings.queue_name, None)]
    return sorted((Pool(n, c["memory"], f"{settings.queue_name}.{n}", c["devices"]) for n, c in settings.pools.items()),
                  key=lambda p: (p.memory, p.devices, p.name))


def by_name(name: str | None) -> Pool | None:
    return next((p for p in configured() if p.name == name), None)


def worker_pool(settings: Settings | None = None) -> Pool:
    """The pool this worker process serves: SPARSETUNE_WORKER_POOL, else the largest (it can run anything)."""
    settings = settings or get_settings()
    pools = configured(settings)
    if settings.worker_pool is None:
        return pools[-1]
    for p in pools:
        if p.name == settings.worker_pool:
            return p
    raise ValueError(f"SPARSETUNE_WORKER_POOL={settings.worker_pool!r} is not a configured pool; "
                     f"expected one of {', '.join(p.name for p in pools)}")


def estimated_peak(model: str, method: str, budget: Any, targets: list[str], hyperparameters: dict[str, Any],
                   method_options: dict[str, Any], *, device: str | None = "cpu", tokens: TokenStats | None = None,
                   task: str | None = None) -> int | None:
    """The same estimate the dashboard shows before launch (smt_core.estimate), per device, with the
    training dataset's row lengths (``tokens``); None if the model has no local config.json to read.
    ``device`` None (unknown): the larger of the CPU and CUDA estimates."""
    devices = devices_of(hyperparameters)
    per_device_batch = max(1, int(hyperparameters["batch_size"]) // devices)
    peaks = []
    for dev in (DEVICES if device is None else (device,)):
        est = estimates.for_model(model, method, budget, targets, per_device_batch,
                                  int(hyperparameters["max_seq_len"]), method_options, device=dev, tokens=tokens,
                                  task=task, gradient_checkpointing=bool(hyperparameters.get("gradient_checkpointing")))
        if est is None:
            return None
        peaks.append(int(est["memory"]["peak"]))
    return max(peaks)


def pool_devices(session: Session) -> dict[str, str]:
    """Pool name -> ``cuda`` or ``cpu``, from the most recent heartbeat of each pool's workers (GPU workers
    report the GPU's name, CPU workers "<cpu model> (N cores)"; see worker/heartbeat.py)."""
    rows = session.execute(select(Worker.pool, Worker.device).where(Worker.kind == WorkerKind.trainer)
                           .order_by(Worker.last_seen_at)).all()
    return {pool: ("cpu" if (device or "").endswith("cores)") or device == "cpu" else "cuda") for pool, device in rows}


def estimated_peaks(session: Session, model: str, method: str, budget: Any, targets: list[str],
                    hyperparameters: dict[str, Any], method_options: dict[str, Any],
                    tokens: TokenStats | None = None, task: str | None = None) -> dict[str, int | None]:
    """Pool name -> the job's estimated peak on that pool's device (computed once per device)."""
    known = pool_devices(session)
    by_device: dict[str | None, int | None] = {}
    out: dict[str, int | None] = {}
    for p in configured():
        dev = known.get(p.name)
        if dev not in by_device:
            by_device[dev] = estimated_peak(model, method, budget, targets, hyperparameters, method_options,
                                            device=dev, tokens=tokens, task=task)
        out[p.name] = by_device[dev]
    return out


def devices_of(hyperparameters: dict[str, Any]) -> int:
    return max(1, int(hyperparameters.get("num_devices") or 1))


def live_pools(session: Session, settings: Settings | None = None) -> set[str]:
    """Pools with at least one trainer whose heartbeat is recent (three intervals) and that is not known to
    have stopped (a warm shutdown says ``stopped``; ``sparsetune up`` marks a worker it saw die ``lost``)."""
    settings = settings or get_settings()
    since = time.time() - 3 * settings.heartbeat_seconds
    return set(session.scalars(select(Worker.pool).where(Worker.last_seen_at >= since, Worker.status.not_in(GONE),
                                                         Worker.kind == WorkerKind.trainer).distinct()))


def no_live_worker_warnings(pool: Pool, live: set[str]) -> list[str] | None:
    """What a job routed to ``pool`` is told when no worker there is live: it waits in the queue."""
    if pool.name in live:
        return None
    if not live & {p.name for p in configured()}:
        return ["no worker is running: the job waits in the queue until one starts "
                "(sparsetune up, or sparsetune worker)"]
    return [f"no pool that fits the job has a live worker: it waits in pool {pool.name}'s queue until one "
            f"starts (sparsetune worker --pool {pool.name})"]


def _peak_on(peak: Peak, pool: Pool) -> int | None:
    return peak.get(pool.name) if isinstance(peak, Mapping) else peak


def fitting(peak: Peak, devices: int = 1) -> list[Pool]:
    """Pools whose workers can hold ``peak`` bytes per device on ``devices`` devices, smallest first (unknown
    estimate: the largest only). ``peak`` may give each pool its own estimate (its device's)."""
    pools = [p for p in configured() if p.devices is None or p.devices >= devices]
    if pools and _peak_on(peak, pools[-1]) is None:
        return pools[-1:]
    return [p for p in pools if p.memory is None or (_peak_on(peak, p) or 0) <= p.memory]


def pick(peak: Peak, live: set[str] | None = None, devices: int = 1) -> Pool | None:
    """The smallest fitting pool with a live worker, else the smallest fitting pool; None if none fits."""
    fits = fitting(peak, devices)
    if live:
        for p in fits:
            if p.name in live:
                return p
    return fits[0] if fits else None


def too_big_message(peak: Peak, devices: int = 1) -> str:
    pools = configured()
    most = max(p.devices or 0 for p in pools)
    if all(p.devices is not None for p in pools) and devices > most:
        return (f"num_devices {devices} is more than any worker pool offers (at most {most} devices per worker); "
                "lower hyperparameters.num_devices or add a pool of multi-device workers")
    largest = pools[-1]
    peak = _peak_on(peak, largest) or 0
    return (f"the job needs about {peak / 2**30:.1f} GiB (estimated peak training memory) but the largest worker "
            f"pool, {largest.name}, offers {largest.memory / 2**30:.1f} GiB; try method smt or lora instead of "
            "full, a smaller batch_size or max_seq_len, or add a larger pool")


def reroute(session: Session, job: Job) -> Pool:
    """Keep the job's pool while it has a live worker; otherwise move it to the smallest live pool that fits
    (a job whose worker host is gone is taken by a pool that can hold it). Updates ``job.pool``."""
    current = by_name(job.pool)
    live = live_pools(session)
    if current is not None and (current.name in live or not live):
        return current
    chosen = pick(job.estimated_memory, live, devices_of(job.hyperparameters)) or current or configured()[-1]
    if chosen.name != job.pool:
        job.pool = chosen.name
    return chosen


def queue_of(job_id: str) -> str:
    """The queue a message about ``job_id`` goes to now."""
    from service.db import session_scope

    with session_scope() as s:
        job = s.get(Job, job_id)
        if job is None:
            return configured()[0].queue
        return reroute(s, job).queue
