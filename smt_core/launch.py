"""Start a data-parallel run on this machine: ``num_devices`` processes joined by torch.distributed.

Rank 0 runs in the calling process, so it keeps the caller's callbacks — the worker's recorder (database
rows, lease, cancel flag) and the CLI's progress bar work unchanged. Ranks 1…N−1 are
``python -m smt_core.launch`` subprocesses that read the spec as JSON on stdin (no pickle, no live
objects) and train silently. They join through a TCPStore that rank 0 opens on a free port, and rank 0
watches the rendezvous, so a peer that dies before joining fails the run at once instead of leaving rank 0
waiting. Peers ignore SIGINT/SIGTERM like the worker's child does (the stop request reaches them through
rank 0, at a step boundary) and exit when their parent disappears.

The same peer entry point also joins a process group set up by ``torchrun`` (it reads RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from smt_core import distributed
from smt_core.callbacks import Callbacks, Cancelled
from smt_core.spec import TrainSpec

PEER_GRACE_SECONDS = 60.0  # how long peers get to finish on their own once rank 0 is done
LOG_TAIL = 2000


def check_devices(spec: TrainSpec) -> str:
    """The backend for this run; refuse more GPUs than are visible (one process per GPU)."""
    name = distributed.default_device_name(spec.device)
    if name.startswith("cuda"):
        if name != "cuda":
            raise ValueError(f"device: {name!r} names one GPU; with num_devices > 1 give 'cuda' or 'cpu'")
        visible = torch.cuda.device_count()
        if spec.num_devices > visible:
            raise ValueError(f"num_devices: {spec.num_devices} asked, but only {visible} GPU(s) are visible "
                             "here (one process per GPU; see CUDA_VISIBLE_DEVICES)")
    return distributed.backend_for(spec.device)


def launch(spec: TrainSpec, callbacks: Callbacks):
    """Train ``spec`` on ``spec.num_devices`` processes; returns rank 0's RunResult."""
    from smt_core.trainer import train

    n = spec.num_devices
    backend = check_devices(spec)
    threads = torch.get_num_threads()
    per_rank = max(1, (os.cpu_count() or 1) // n)  # CPU ranks share the cores instead of fighting for them
    store = dist.TCPStore("127.0.0.1", 0, n, is_master=True, wait_for_workers=False,
                          timeout=distributed.STORE_TIMEOUT)
    logs = Path(tempfile.mkdtemp(prefix="sparsetune-ranks-"))
    peers: dict[int, subprocess.Popen] = {}
    try:
        for r in range(1, n):
            peers[r] = _start_peer(spec, r, store.port, logs, per_rank if backend == "gloo" else None)
        _wait_for_peers(store, peers, logs)
        if backend == "gloo":
            torch.set_num_threads(per_rank)
        distributed.init(0, n, store, backend)
        try:
            result = train(spec, callbacks)
        except Cancelled:
            _finish(peers, callbacks, PEER_GRACE_SECONDS)  # every stop is collective: they stopped too
            raise
        except BaseException as exc:
            failed = _failed_peers(peers, logs, wait=1.0)  # a peer that died first is the likely cause
            distributed.teardown()  # peers blocked in a collective now see the closed connection
            if failed and isinstance(exc, Exception) and not isinstance(exc, ValueError):
                raise RuntimeError(failed) from exc
            raise
        killed = _finish(peers, callbacks, PEER_GRACE_SECONDS)
        failed = _failed_peers({r: p for r, p in peers.items() if r not in killed}, logs)
        if failed:  # after the replica check passed: the result stands, the exit is worth a look
            callbacks.fire("on_log", message=f"after training: {failed}", level="warning")
        return result
    finally:
        distributed.teardown()
        torch.set_num_threads(threads)
        for p in peers.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(logs, ignore_errors=True)


def _start_peer(spec: TrainSpec, r: int, port: int, logs: Path, threads: int | None) -> subprocess.Popen:
    env = {**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(spec.num_devices),
           "LOCAL_WORLD_SIZE": str(spec.num_devices), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")  # peers are silent: their log is read only on failure
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(logs / f"rank{r}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "smt_core.launch"], stdin=subprocess.PIPE, stdout=log,
                                stderr=subprocess.STDOUT, env=env)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec.to_dict()).encode())
    proc.stdin.close()
    return proc


def _tail(logs: Path, r: int) -> str:
    try:
        return (logs / f"rank{r}.log").read_text(errors="replace")[-LOG_TAIL:].strip()
    except OSError:
        return ""


def _failed_peers(peers: dict[int, subprocess.Popen], logs: Path, wait: float = 0.0) -> str:
    """A message naming the peers that exited with an error on their own (with their log's tail), or ''."""
    deadline = time.monotonic() + wait
    out = []
    for r, p in peers.items():
        try:
            code = p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            continue
        if code:
            how = f"was killed (signal {-code})" if code < 0 else f"failed (exit {code})"
            tail = _tail(logs, r)
            out.append(f"rank {r} {how}" + (f": {tail}" if tail else ""))
    return "; ".join(out)


def _wait_for_peers(store: dist.TCPStore, peers: dict[int, subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + distributed.STORE_TIMEOUT.total_seconds()
    while store.add(distributed.JOIN_KEY, 0) < len(peers):
        for r, p in peers.items():
            if p.poll() is not None:
                raise RuntimeError(f"rank {r} exited (code {p.returncode}) before joining: {_tail(logs, r)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ranks did not join within {distributed.STORE_TIMEOUT}")
        time.sleep(0.05)


def _finish(peers: dict[int, subprocess.Popen], cb: Callbacks, grace: float) -> set[int]:
    """Wait for the peers to exit by themselves; kill (and report) any that do not. Returns the killed."""
    deadline = time.monotonic() + grace
    killed = set()
    for r, p in peers.items():
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            killed.add(r)
            cb.fire("on_log", message=f"rank {r} did not finish within {grace:.0f}s and was stopped",
                    level="warning")
    return killed


# ---- the peer side ---------------------------------------------------------------------------------------
def _exit_with_parent() -> None:
    """A peer outlives nothing: if the process that started it is gone, stop."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def peer_main() -> int:
    """Entry point of ranks 1…N−1: the spec as JSON on stdin, RANK/WORLD_SIZE/MASTER_* in the environment."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent()
    spec = TrainSpec(**json.loads(sys.stdin.read()))
    from smt_core.trainer import train  # the heavy imports happen before joining, not while rank 0 waits

    distributed.init_from_env(distributed.backend_for(spec.device))
    try:
        train(spec, Callbacks())
    except Cancelled:
        pass  # rank 0 stopped the run at this same step and saves what needs saving
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(peer_main())
