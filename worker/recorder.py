"""Turns the engine's callbacks into rows: events, metric points, blocks, progress and checkpoints.

Runs inside the training child. Every write is fenced by the run's token, so a run that lost its lease
(another worker took the job) writes nothing more and stops at its next step.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service.blobstore import get_store
from service.crud import add_event
from service.db import get_engine, retry_on_disconnect, session_scope
from service.models import BlockSelection, Checkpoint, Job, MetricPoint
from service.states import EventType, JobPhase, JobStatus
from smt_core.callbacks import Callbacks
from worker import leases, tarball


def upsert(s: Session, model: Any, values: dict[str, Any], keys: list[str], update: list[str]) -> None:
    insert = pg_insert if get_engine().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(model).values(**values)
    s.execute(stmt.on_conflict_do_update(index_elements=keys, set_={k: stmt.excluded[k] for k in update}))


def _clean(payload: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy (paths and numpy scalars become plain values)."""
    out: dict[str, Any] = {}
    for k, v in payload.items():
        if isinstance(v, dict):
            out[k] = _clean(v)
        elif isinstance(v, list | tuple):  # e.g. SMT's metrics.selection.by_layer: kept a list, not its repr
            out[k] = [_clean({"v": x})["v"] for x in v]
        elif isinstance(v, bool | int | float | str) or v is None:
            out[k] = v
        elif hasattr(v, "item"):
            out[k] = v.item()
        else:
            out[k] = str(v)
    return out


class Recorder:
    def __init__(self, job_id: str, token: int, stop_event: Any = None) -> None:
        self.job_id, self.token, self.stop_event = job_id, token, stop_event
        self.lost = False
        self.handback = False
        self.parent = os.getppid()
        self.step_started = time.time()
        self.step_seconds: list[float] = []

    def callbacks(self) -> Callbacks:
        cb = Callbacks()
        for name in ("on_phase", "on_step_end", "on_eval", "on_log", "on_checkpoint", "on_selection", "on_info"):
            cb.add(name, getattr(self, name))
        cb.add_stop_check(self.should_stop)
        cb.add_checkpoint_request(lambda: self.handback)  # SIGTERM hand-back: checkpoint, lose no step
        return cb

    def _write(self, fn, **progress: Any) -> None:
        """One fenced transaction: the job row update (if any) and the rows ``fn`` adds. Retried whole through
        a short database outage (training waits meanwhile rather than running ahead of its records)."""
        def transaction() -> None:
            with session_scope() as s:
                leases.fenced(s, self.job_id, self.token, **progress)
                job = s.get(Job, self.job_id)
                fn(s, job)

        try:
            retry_on_disconnect(transaction, "recording progress")
        except leases.LostLease:
            self.lost = True

    # ---- the engine's events ------------------------------------------------------------------------
    def on_phase(self, p: dict[str, Any]) -> None:
        phase = JobPhase.shown(p["phase"])  # "loading" shows as null
        self._write(lambda s, job: add_event(s, job, EventType.status, {"status": JobStatus.running, "phase": phase}),
                    phase=phase)

    def on_info(self, p: dict[str, Any]) -> None:
        p = _clean(p)
        self._write(lambda s, job: add_event(s, job, EventType.log, {"level": "info", "message": "prepared", **p}),
                    trainable_params=p.get("trainable_params"), total_params=p.get("total_params"),
                    total_steps=p.get("total_steps"))

    def on_step_end(self, p: dict[str, Any]) -> None:
        p = _clean(p)
        now = time.time()
        self.step_seconds.append(now - self.step_started)
        self.step_started = now
        recent = self.step_seconds[-20:]
        left = max(0, (p.get("total_steps") or 0) - p["step"])
        eta = now + 1.15 * left * sum(recent) / len(recent)  # + evaluation and saving, roughly

        def rows(s: Session, job: Job) -> None:
            upsert(s, MetricPoint, {"job_id": job.id, "step": p["step"], "train_loss": p.get("train_loss"),
                                    "learning_rate": p.get("learning_rate"),
                                    "tokens_per_second": p.get("tokens_per_second"), "memory": p.get("memory")},
                   ["job_id", "step"], ["train_loss", "learning_rate", "tokens_per_second", "memory"])
            add_event(s, job, EventType.metric, p)

        self._write(rows, steps_completed=p["step"], trained_tokens=p.get("trained_tokens") or 0,
                    total_steps=p.get("total_steps"), estimated_finish=eta,
                    lease_expires_at=now + _lease())

    def on_eval(self, p: dict[str, Any]) -> None:
        p = _clean(p)

        def rows(s: Session, job: Job) -> None:
            upsert(s, MetricPoint, {"job_id": job.id, "step": p["step"], "eval_loss": p.get("eval_loss"),
                                    "eval_accuracy": p.get("eval_accuracy")},
                   ["job_id", "step"], ["eval_loss", "eval_accuracy"])
            add_event(s, job, EventType.metric, p)

        self._write(rows)

    def on_log(self, p: dict[str, Any]) -> None:
        p = _clean(p)
        self._write(lambda s, job: add_event(s, job, EventType.log, {"level": p.get("level", "info"),
                                                             "message": p.get("message", "")}))

    def on_selection(self, p: dict[str, Any]) -> None:
        p = _clean(p) if not isinstance(p.get("modules"), list) else p

        def rows(s: Session, job: Job) -> None:
            upsert(s, BlockSelection, {"job_id": job.id, "data": p}, ["job_id"], ["data"])
            add_event(s, job, EventType.log, {"level": "info", "message": f"selected blocks in {len(p.get('modules', []))} modules"})

        self._write(rows)

    def on_checkpoint(self, p: dict[str, Any]) -> None:
        """Store the checkpoint folder (a tar) and drop the previous one, fenced by the token."""
        with tempfile.TemporaryDirectory() as tmp:
            tar = tarball.pack(p["path"], Path(tmp) / "checkpoint.tar")

            def rows(s: Session, job: Job) -> None:
                old = s.scalar(select(Checkpoint.blob_id).where(Checkpoint.job_id == job.id))
                blob = get_store().write_file(s, tar)
                s.execute(delete(Checkpoint).where(Checkpoint.job_id == job.id))
                s.add(Checkpoint(job_id=job.id, step=p["step"], blob_id=blob.id, fencing_token=self.token))
                s.flush()
                if old:  # its pages hold the next checkpoint: no need to hand them back to the file system
                    get_store().delete(s, old, reclaim=False)
                add_event(s, job, EventType.log, {"level": "info", "message": f"checkpoint at step {p['step']}"})

            self._write(rows, checkpoint_step=p["step"])

    # ---- polled every step and eval batch -----------------------------------------------------------
    def should_stop(self) -> bool:
        if self.lost:
            return True
        if os.getppid() != self.parent:  # the worker died: stop; the lease expires and the job is resumed
            self.lost = True
            return True
        if self.stop_event is not None and self.stop_event.is_set():
            self.handback = True
            return True
        try:
            return leases.renew(self.job_id, self.token)
        except leases.LostLease:
            self.lost = True
            return True


def restore_checkpoint(s: Session, job_id: str, out_dir: Path) -> int | None:
    """Unpack the job's stored checkpoint into ``out_dir/checkpoint``; returns its step (None: start fresh)."""
    ck = s.get(Checkpoint, job_id)
    if ck is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "checkpoint.tar"
        get_store().read_to_file(s, ck.blob_id, tar)
        target = out_dir / "checkpoint"
        shutil.rmtree(target, ignore_errors=True)
        tarball.unpack(tar, target)
    return ck.step


def _lease() -> float:
    from service.settings import get_settings

    return get_settings().lease_seconds
