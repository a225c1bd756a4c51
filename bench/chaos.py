"""Chaos run: the service on Postgres and Redis, small real training jobs submitted without pause, and faults
at random — worker processes and training children SIGKILLed, Redis and Postgres restarted — for
``--minutes``; then a drain, and the audit of bench/chaos_audit.py (every job ended, and ended for a
reason; no metric step twice; every artifact's sha256 right; nothing orphaned).

The stack is the documented one: ``sparsetune up`` with ``DATABASE_URL``/``BROKER_URL`` pointing at a private
PostgreSQL cluster and a private Redis without persistence (tests/reliability/servers.py: restartable
without disturbing anything else on the machine), on a fresh database that ``up`` migrates, plus
``--extra-workers`` ``sparsetune worker`` processes, which this script restarts (with backoff) when they
die, as a supervisor would; restarting the worker ``up`` started is ``up``'s own job, and whether it does is
reported. Faults come with mean spacing ``--fault-every`` seconds, in random order, each kind by its weight
(every kind within nine faults):

- ``kill_child``: SIGKILL one running job's training process (resumed from its checkpoint);
- ``kill_worker``: SIGKILL one worker process alone (its child notices and stops; the lease expires);
- ``kill_worker_host``: SIGKILL a worker and everything under it at once (a host gone);
- ``kill_inference``: SIGKILL the inference process ``up`` runs (``up`` must restart it; after the drain a
  fine-tuned model must answer a chat request again);
- ``restart_redis``: stop Redis, wait a moment, start it empty (queued messages lost);
- ``restart_postgres``: a fast shutdown, 1 to 15 s down (sometimes past the lease), then up again.

Only processes this script started (and their descendants) are ever signalled. Not in CI: it takes
``--minutes`` plus the drain. The jobs are tests/factories.py's tiny random LLaMA and completion rows.

    python bench/chaos.py                  # 20 minutes of faults, then the drain and the audit
    python bench/chaos.py --minutes 2      # a short look

Writes bench/results/chaos.json and prints the counts as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from chaos_audit import audit, problems  # noqa: E402  (bench/: the script's own folder)
from procinfo import children, cmdline, descendants, descends_from  # noqa: E402

from service.workdirs import alive  # noqa: E402
from tests import factories  # noqa: E402
from tests.reliability.servers import PrivatePostgres, PrivateRedis, free_port  # noqa: E402

FAULTS = {"kill_child": 3, "kill_worker": 2, "kill_worker_host": 2, "kill_inference": 1, "restart_redis": 1,
          "restart_postgres": 1}
MAX_ATTEMPTS = 3  # the documented default; the audit checks failures against it


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Supervised:
    """A worker this script runs: restarted with exponential backoff (1 s doubling to 30 s, reset once it
    has stayed up a minute) whenever it dies, as `sparsetune up`'s supervisor does for its own."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.cmd, self.env, self.logs = name, cmd, env, logs
        self.proc: subprocess.Popen | None = None
        self.delay, self.started_at, self.due, self.restarts = 1.0, 0.0, 0.0, 0

    def start(self) -> None:
        out = (self.logs / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.started_at = time.monotonic()

    def tick(self) -> None:
        """Reap a dead process and restart it when its backoff is over."""
        if self.proc is not None and self.proc.poll() is None:
            if time.monotonic() - self.started_at > 60:
                self.delay = 1.0
            return
        now = time.monotonic()
        if self.proc is not None:  # just died: schedule the restart
            log(f"{self.name} exited ({self.proc.returncode}); restarting in {self.delay:g} s")
            self.proc, self.due = None, now + self.delay
            self.delay = min(30.0, self.delay * 2)
        elif now >= self.due:
            self.restarts += 1
            self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Stack:
    """`sparsetune up` on the private servers, plus the extra workers; knows which processes are workers."""

    def __init__(self, env: dict[str, str], logs: Path, extra_workers: int) -> None:
        self.env, self.logs, self.port = env, logs, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        binary = shutil.which("sparsetune", path=str(Path(sys.executable).parent)) or "sparsetune"
        self.up: subprocess.Popen | None = None
        self.up_cmd = [binary, "up", "--host", "127.0.0.1", "--port", str(self.port)]
        self.extra = [Supervised(f"worker-{i}", [binary, "worker"], env, logs) for i in range(extra_workers)]
        self.up_workers_seen: set[int] = set()
        self.up_inference_seen: set[int] = set()

    def start(self) -> str:
        """Start `up`, return the key it prints for the fresh database; then the extra workers."""
        self.up = subprocess.Popen(self.up_cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                   stderr=(self.logs / "up.log").open("ab"), text=True, start_new_session=True)
        key, deadline = None, time.time() + 120
        while time.time() < deadline:
            line = self.up.stdout.readline()
            if not line:
                raise RuntimeError("sparsetune up exited:\n" + (self.logs / "up.log").read_text()[-3000:])
            if line.startswith("SPARSETUNE_API_KEY="):
                key = line.strip().split("=", 1)[1]
            if line.startswith("ready on "):
                break
        threading.Thread(target=self.up.stdout.read, daemon=True).start()  # drain the pipe
        for w in self.extra:
            w.start()
        if not key:
            raise RuntimeError("sparsetune up printed no key for the fresh database")
        return key

    def roots(self) -> set[int]:
        pids = {w.proc.pid for w in self.extra if w.proc is not None}
        return pids | ({self.up.pid} if self.up is not None else set())

    def workers(self) -> list[int]:
        """Worker processes alive now: `up`'s children that run the worker, and the extra workers."""
        under_up = [p for p in children(self.up.pid) if _is_worker(cmdline(p))] if self.up else []
        self.up_workers_seen.update(under_up)
        return under_up + [w.proc.pid for w in self.extra if w.proc is not None and alive(w.proc.pid)]

    def inference(self) -> list[int]:
        """The inference process `up` runs (``python -m inference``), if alive now."""
        pids = [p for p in children(self.up.pid) if cmdline(p)[1:3] == ["-m", "inference"]] if self.up else []
        self.up_inference_seen.update(pids)
        return pids

    def tick(self) -> None:
        if self.up is not None and self.up.poll() is not None:
            raise RuntimeError(f"sparsetune up itself exited ({self.up.returncode}): see {self.logs / 'up.log'}")
        self.workers()
        self.inference()
        for w in self.extra:
            w.tick()

    def stop(self) -> None:
        for w in self.extra:
            w.stop()
        if self.up is not None and self.up.poll() is None:
            os.killpg(self.up.pid, signal.SIGTERM)
            try:
                self.up.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.up.pid, signal.SIGKILL)
                self.up.wait(10)


def _is_worker(argv: list[str]) -> bool:
    """``python -m worker`` (what `up` starts, and what `sparsetune worker` becomes)."""
    return argv[1:3] == ["-m", "worker"] or argv[1:3] == [str(Path(sys.executable).parent / "sparsetune"), "worker"]


class Submitter(threading.Thread):
    """Keeps ``backlog`` jobs queued or running, submitting through the API like a user; counts answers."""

    def __init__(self, url: str, key: str, dataset: str, backlog: int, steps: tuple[int, int],
                 rng: random.Random) -> None:
        super().__init__(name="submitter", daemon=True)
        self.url, self.auth, self.dataset = url, {"Authorization": f"Bearer {key}"}, dataset
        self.backlog, self.steps, self.rng = backlog, steps, rng
        self.stop_event = threading.Event()
        self.answers: Counter[str] = Counter()
        self.server_errors: list[str] = []  # 5xx other than the documented 503s
        self.submitted: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.auth, timeout=30) as client:
            while not self.stop_event.wait(1.0):
                try:
                    usage = client.get("/v1/usage")
                    self.answers[f"usage {usage.status_code}"] += 1
                    if usage.status_code != 200:
                        self._note(usage)
                        continue
                    if usage.json()["queued_jobs"] + usage.json()["running_jobs"] >= self.backlog:
                        continue
                    body = {"model": "tiny-llama", "training_dataset": self.dataset, "method": "smt",
                            "budget": 4096, "seed": self.rng.randrange(1000),
                            "hyperparameters": {"steps": self.rng.randint(*self.steps), "batch_size": 4,
                                                "max_seq_len": 32},
                            "method_options": {"block_size": 16, "selection_steps": 2}}
                    r = client.post("/v1/jobs", json=body)
                    self.answers[f"create {r.status_code}"] += 1
                    if r.status_code == 201:
                        self.submitted.append(r.json()["id"])
                    else:
                        self._note(r)
                except httpx.HTTPError as exc:
                    self.answers[f"transport {exc.__class__.__name__}"] += 1

    def _note(self, r: httpx.Response) -> None:
        if r.status_code >= 500 and not (r.status_code == 503 and "retry shortly" in r.text):
            self.server_errors.append(f"{r.request.method} {r.request.url.path} {r.status_code}: {r.text[:300]}")


class Chaos:
    """Draws and applies the faults; signals only processes under the stack's roots."""

    def __init__(self, stack: Stack, pg: PrivatePostgres, rds: PrivateRedis, dsn: str, rng: random.Random) -> None:
        self.stack, self.pg, self.rds, self.dsn, self.rng = stack, pg, rds, dsn, rng
        self.done: list[dict[str, Any]] = []
        self.deck: list[str] = []

    def apply(self) -> None:
        """The next fault from a shuffled deck holding each kind by its weight: random order, yet every kind
        comes up within one deck (9 faults), even in a short run."""
        if not self.deck:
            self.deck = [kind for kind, n in FAULTS.items() for _ in range(n)]
            self.rng.shuffle(self.deck)
        kind = self.deck.pop()
        started = time.time()
        target = getattr(self, kind)()
        self.done.append({"at": round(started, 1), "fault": kind, "target": target,
                          "seconds": round(time.time() - started, 1)})
        log(f"fault {kind}: {target}")

    def _kill(self, pids: list[int]) -> list[int]:
        roots = self.stack.roots()
        mine = [p for p in pids if descends_from(p, roots) and p not in (self.stack.up.pid,)]
        for p in mine:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return mine

    def kill_child(self) -> str:
        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                pids = [r[0] for r in conn.execute("SELECT child_pid FROM jobs WHERE status = 'running' "
                                                   "AND child_pid IS NOT NULL")]
        except psycopg.OperationalError:
            pids = []
        live = [p for p in pids if alive(p)]
        if not live:
            return "none running"
        return f"child {self._kill([self.rng.choice(live)])}"

    def kill_worker(self) -> str:
        workers = self.stack.workers()
        return f"worker {self._kill([self.rng.choice(workers)])}" if workers else "no worker alive"

    def kill_worker_host(self) -> str:
        workers = self.stack.workers()
        if not workers:
            return "no worker alive"
        w = self.rng.choice(workers)
        return f"worker and descendants {self._kill([w, *descendants(w)])}"

    def kill_inference(self) -> str:
        pids = self.stack.inference()
        return f"inference {self._kill(pids[:1])}" if pids else "no inference process alive"

    def restart_redis(self) -> str:
        self.rds.stop()
        down = self.rng.uniform(0.5, 5)
        time.sleep(down)
        self.rds.start()
        return f"down {down:.1f} s"

    def restart_postgres(self) -> str:
        self.pg.stop()
        down = self.rng.uniform(1, 15)
        time.sleep(down)
        self.pg.start()
        return f"down {down:.1f} s"


def answers_after_chaos(url: str, key: str, dsn: str, wait: float = 120) -> dict[str, Any]:
    """A chat request to the newest succeeded job's fine-tuned model, retried until the (restarted) inference
    process answers 200 or ``wait`` seconds pass: serving must come back after its process was killed."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT id FROM jobs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1").fetchone()
    if row is None:
        return {"status": None, "why": "no job succeeded"}
    headers = {"Authorization": f"Bearer {key}"}
    model = httpx.get(f"{url}/v1/jobs/{row[0]}", headers=headers, timeout=30).json()["fine_tuned_model"]
    started, status = time.monotonic(), None
    while time.monotonic() - started < wait:
        try:
            status = httpx.post(f"{url}/v1/completions", headers=headers, timeout=120, json={
                "model": model, "prompt": "the red fruit is", "max_tokens": 4, "temperature": 0}).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        if status == 200:
            break
        time.sleep(2)
    return {"model": model, "status": status, "seconds": round(time.monotonic() - started, 1)}


def service_env(home: Path, db_url: str, broker_url: str, model: Path) -> dict[str, str]:
    """The documented variables, with short leases and periods so that faults are noticed within seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARSETUNE_") and k not in ("DATABASE_URL",
                                                                                                   "BROKER_URL")}
    env.update({"SPARSETUNE_HOME": str(home), "DATABASE_URL": db_url, "BROKER_URL": broker_url,
                "SPARSETUNE_MODELS": json.dumps({"tiny-llama": str(model)}), "SPARSETUNE_ENV": "local",
                "SPARSETUNE_QUEUE": "st-chaos", "SPARSETUNE_LEASE_SECONDS": "10", "SPARSETUNE_RECONCILE_SECONDS": "2",
                "SPARSETUNE_REQUEUE_AFTER_SECONDS": "10", "SPARSETUNE_CHECKPOINT_EVERY": "5",
                "SPARSETUNE_HEARTBEAT_SECONDS": "2", "SPARSETUNE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
                "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def markdown(result: dict[str, Any]) -> str:
    a = result["audit"]
    lines = [f"Chaos run: {result['minutes']} min of faults, drained in {result['drain_seconds']} s "
             f"({'all ended' if result['drained'] else 'drain timed out'}); {result['extra_workers']} extra "
             f"worker(s) beside `sparsetune up`'s", "", "| what | count |", "|---|---|"]
    rows = [("jobs submitted", a["jobs"]), *((f"jobs {k}", v) for k, v in sorted(a["by_status"].items())),
            *((f"failed with {k}", v) for k, v in sorted(a["failed_by_code"].items(), key=str)),
            *((f"faults: {k}", v) for k, v in sorted(result["faults_by_kind"].items())),
            ("worker restarts by this script", result["extra_worker_restarts"]),
            ("worker pids seen under `up`", result["up_worker_pids_seen"]),
            ("inference pids seen under `up`", result["up_inference_pids_seen"]),
            ("a fine-tuned model answers after the chaos (HTTP status, seconds waited)",
             f"{result['serving_after_chaos'].get('status')}, {result['serving_after_chaos'].get('seconds')}"),
            ("API 5xx other than the documented 503", len(result["api_server_errors"])),
            ("artifacts checked", a["artifacts"]), ("blobs", a["blobs"]),
            ("metric events repeated after a resume (allowed)", a["metric_events_repeated_after_resume"])]
    rows += [(f"**problem**: {k}", v) for k, v in result["problems"].items()]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="how long jobs are submitted and faults drawn")
    ap.add_argument("--drain-minutes", type=float, default=10.0, help="at most this long for the jobs to end after")
    ap.add_argument("--fault-every", type=float, default=20.0, help="mean seconds between faults")
    ap.add_argument("--extra-workers", type=int, default=1, help="`sparsetune worker` processes beside up's")
    ap.add_argument("--backlog", type=int, default=3, help="jobs kept queued or running")
    ap.add_argument("--steps", default="10,40", help="each job's steps, drawn from this range")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, home) afterwards")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="st-chaos-"))
    logs = tmp / "logs"
    logs.mkdir()
    pg, rds = PrivatePostgres(), PrivateRedis(logs)
    stack: Stack | None = None
    submitter: Submitter | None = None
    try:
        pg.start()
        rds.start()
        with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE chaos")
        db_url = pg.url.rsplit("/", 1)[0] + "/chaos"
        dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
        model = factories.build_tiny_model(tmp / "tiny-llama", "llama")
        home = tmp / "home"
        stack = Stack(service_env(home, db_url, rds.url, model), logs, args.extra_workers)
        key = stack.start()
        data = "".join(json.dumps(r) + "\n" for r in factories.completion_rows(48)).encode()
        r = httpx.post(f"{stack.url}/v1/datasets", headers={"Authorization": f"Bearer {key}"},
                       files={"file": ("pc.jsonl", data)}, timeout=60)
        r.raise_for_status()
        lo, hi = (int(x) for x in args.steps.split(","))
        submitter = Submitter(stack.url, key, r.json()["id"], args.backlog, (lo, hi), rng)
        submitter.start()
        chaos = Chaos(stack, pg, rds, dsn, random.Random(args.seed + 1))
        log(f"stack up on {stack.url}; faults for {args.minutes:g} min")
        end = time.monotonic() + args.minutes * 60
        next_fault = time.monotonic() + rng.expovariate(1 / args.fault_every)
        while time.monotonic() < end:
            stack.tick()
            if time.monotonic() >= next_fault:
                chaos.apply()
                next_fault = time.monotonic() + rng.expovariate(1 / args.fault_every)
            time.sleep(0.5)
        submitter.stop_event.set()
        submitter.join(60)
        log("faults over; draining")
        drain_start = time.monotonic()
        drained = False
        while time.monotonic() - drain_start < args.drain_minutes * 60:
            stack.tick()
            with psycopg.connect(dsn) as conn:
                left = conn.execute("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0]
            if left == 0:
                drained = True
                break
            time.sleep(2)
        drain_seconds = round(time.monotonic() - drain_start)
        stack.workers()
        serving = answers_after_chaos(stack.url, key, dsn)
        log(f"serving after chaos: {serving}")
        stack.stop()  # warm: nothing runs now, and the audit reads a quiet database and home
        result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "minutes": args.minutes,
                  "extra_workers": args.extra_workers, "fault_every_s": args.fault_every, "backlog": args.backlog,
                  "steps": [lo, hi], "load_average": list(os.getloadavg()), "drained": drained,
                  "drain_seconds": drain_seconds, "faults": chaos.done,
                  "faults_by_kind": dict(Counter(f["fault"] for f in chaos.done)),
                  "extra_worker_restarts": sum(w.restarts for w in stack.extra),
                  "up_worker_pids_seen": len(stack.up_workers_seen),
                  "up_inference_pids_seen": len(stack.up_inference_seen), "serving_after_chaos": serving,
                  "api_answers": dict(submitter.answers), "api_server_errors": submitter.server_errors,
                  "audit": audit(dsn, home, MAX_ATTEMPTS)}
        result["problems"] = problems(result["audit"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(markdown(result))
        ok = not any(result["problems"].values()) and not result["api_server_errors"] and serving["status"] == 200
        return 0 if ok else 1
    finally:
        if submitter is not None:
            submitter.stop_event.set()
        if stack is not None:
            stack.stop()
        rds.stop()
        pg.destroy()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
