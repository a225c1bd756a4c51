"""API load benchmark: the service on Postgres with 10,000 jobs and their events, no worker consuming.

A fresh database on the local Postgres server (``alembic upgrade head``), jobs and events bulk-inserted for one
owner, uvicorn as a subprocess, and open-loop load on loopback at fixed rates of a mix of listing jobs,
reading a job, reading its events and creating jobs. Every request has a scheduled send time (``i / rate``
after the start) and its latency runs from that time, not from when the client got round to sending it, so a
slow server cannot slow the load down and hide its own queueing (coordinated omission).

Also measured: first-page list latency at 1,000 and at 10,000 jobs of the same owner (sequential requests),
and the Postgres plans (EXPLAIN ANALYZE) of the list, read and events queries.

With ``--hostile`` the normal mix runs while another process (bench/hostile.py) holds 500 event streams per
API process, 20 slow clients and 4 keyless chunked 250 MiB uploads; each rate's row then adds each API
process's peak RSS and what the hostile clients saw (issue 14's target: 200 req/s at p99 < 100 ms, no 5xx,
< 400 MB RSS per API process, on a quiet machine).

The rate limits and the per-owner active-job quota are raised far above the load (the limiter still runs on
every request): the load is one owner's, and the benchmark measures the service, not its limits.

    python bench/api_load.py                                # rates 50..400 req/s, 20 s each, 2 workers
    python bench/api_load.py --rates 100 --seconds 5 --jobs 2000      # a quick look
    python bench/api_load.py --hostile --rates 100,200 --seconds 20   # the hostile mix
    python bench/api_load.py --hostile --rates 50 --seconds 5 --jobs 2000 --streams 100   # a quick look

Writes bench/results/api_load.json (api_load_hostile.json with --hostile) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from hostile import HostileProcess, delta  # bench/: the script's own folder
from procinfo import CpuMeter, RssSampler, pids_named, raise_open_files

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("SPARSETUNE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("SPARSETUNE_BENCH_REDIS", "redis://127.0.0.1:6379/14")
MIX = {"list_jobs": 3, "read_job": 3, "list_events": 3, "create_job": 1}  # per 10 requests
TINY_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": True}
P99_TARGET_MS = 100.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# ---------------------------------------------------------------- database: create, seed, explain, drop

def create_database() -> tuple[str, str]:
    import psycopg

    name = f"st_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": url}, capture_output=True, timeout=120)
    return name, url


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed_jobs(engine, owner_id: str, dataset_id: str, start: int, count: int, events_per_job: int,
              rng: random.Random) -> list[str]:
    """Bulk-insert ``count`` finished jobs (created over the last 30 days) and their events."""
    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from service.models import Event, Job, JobStatus
    from service.security import new_id

    now = time.time()
    jobs, events = [], []
    for i in range(start, start + count):
        created = now - 30 * 86400 * rng.random()
        status = rng.choices([JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled], [8, 1, 1])[0]
        job_id = new_id("job")
        jobs.append({"id": job_id, "owner_id": owner_id, "model": "cfg-llama", "method": "smt", "budget": 0.01,
                     "training_dataset_id": dataset_id, "targets": ["q", "k", "v"],
                     "hyperparameters": {"steps": 100, "batch_size": 8, "max_seq_len": 256},
                     "method_options": {}, "seed": i, "meta": {"run": i}, "status": status,
                     "steps_completed": 100, "total_steps": 100, "trainable_params": 1310720,
                     "total_params": 134515008, "metrics": {"train_loss": 1.5 + rng.random()},
                     "created_at": created, "started_at": created + 1, "finished_at": created + 600})
        kinds = ["status"] + ["metric"] * max(0, events_per_job - 2) + ["end"]
        for k, kind in enumerate(kinds[:events_per_job]):
            events.append({"job_id": job_id, "owner_id": owner_id, "type": kind, "created_at": created + k,
                           "data": {"step": k, "train_loss": 2.0 - k / 100} if kind == "metric"
                           else {"status": status.value}})
    with Session(engine) as session:
        session.execute(insert(Job), jobs)
        session.execute(insert(Event), events)
        session.commit()
    return [j["id"] for j in jobs]


def middle_job(engine, owner_id: str, n: int) -> str:
    """The job halfway down the owner's list, newest first: the anchor of a deep page."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text("SELECT id FROM jobs WHERE owner_id = :o ORDER BY created_at DESC, id DESC "
                                 "OFFSET :k LIMIT 1"), {"o": owner_id, "k": n // 2}).scalar_one()


def explain(engine, owner_id: str, job_id: str) -> dict[str, str]:
    """EXPLAIN ANALYZE of the statements the routes run, compiled from the same SQLAlchemy expressions
    (``list_jobs_after``: the page after ``job_id``, halfway down the owner's list)."""
    from sqlalchemy import select, text, tuple_
    from sqlalchemy.dialects import postgresql

    from service.models import ApiKey, Event, Job

    with engine.connect() as conn:
        anchor = conn.execute(select(Job.created_at, Job.id).where(Job.id == job_id)).one()
    newest_first = (Job.created_at.desc(), Job.id.desc())
    statements = {
        "list_jobs": select(Job).where(Job.owner_id == owner_id).order_by(*newest_first).limit(21),
        "list_jobs_after": select(Job).where(Job.owner_id == owner_id)
        .where(tuple_(Job.created_at, Job.id) < tuple_(anchor.created_at, anchor.id))
        .order_by(*newest_first).limit(21),
        "read_job": select(Job).where(Job.id == job_id),
        "list_events": select(Event).where(Event.job_id == job_id).order_by(Event.id.desc()).limit(101),
        "authenticate": select(ApiKey).where(ApiKey.prefix == "abcdef012345"),
    }
    plans = {}
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()  # statistics are transactional: an ANALYZE rolled back leaves the server's plans stale
        for name, stmt in statements.items():
            sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
            rows = conn.execute(text("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql)).scalars()
            plans[name] = "\n".join(rows)
    return plans


# ---------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """One single-process uvicorn. Not ``--workers N``: on this machine its shared socket added ~43 ms to
    every response (sequential /healthz: 1.0 ms with one worker, 44 ms with two), so the benchmark runs one
    process per core on its own port and the client spreads requests over them, as a load balancer would."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
           "--no-access-log", "--log-level", "warning", "--http", "api.server:HttpToolsProtocol"]  # as deployed
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError("the API did not start:\n" + log.read_text()[-3000:])


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# ---------------------------------------------------------------- load

class Target:
    """What each kind of request asks for; keys are spread round-robin (the limits are per key)."""

    def __init__(self, bases: list[str], keys: list[str], job_ids: list[str], dataset_id: str,
                 rng: random.Random) -> None:
        self.bases, self.headers = bases, [{"Authorization": f"Bearer {k}"} for k in keys]
        self.job_ids, self.dataset_id, self.rng = job_ids, dataset_id, rng

    def request(self, kind: str, i: int) -> tuple[str, str, dict[str, Any] | None, dict[str, str]]:
        headers, base = self.headers[i % len(self.headers)], self.bases[i % len(self.bases)]
        if kind == "list_jobs":
            return "GET", f"{base}/v1/jobs?limit=20", None, headers
        if kind == "read_job":
            return "GET", f"{base}/v1/jobs/{self.rng.choice(self.job_ids)}", None, headers
        if kind == "list_events":
            return "GET", f"{base}/v1/jobs/{self.rng.choice(self.job_ids)}/events", None, headers
        body = {"model": "cfg-llama", "training_dataset": self.dataset_id, "method": "smt", "budget": 0.01,
                "hyperparameters": {"steps": 2, "batch_size": 2, "max_seq_len": 32}}
        return "POST", f"{base}/v1/jobs", body, headers


async def open_loop(target: Target, rate: float, seconds: float, warmup: float,
                    rng: random.Random) -> dict[str, Any]:
    """Send at i/rate after the start whatever the replies do; latency counts from the scheduled time."""
    kinds = [k for k, n in MIX.items() for _ in range(n)]
    total, warm = int(rate * (seconds + warmup)), int(rate * warmup)
    results: list[tuple[str, float, int]] = []  # (kind, latency s, status; 0 = transport error)
    # aiohttp: a fraction of httpx's CPU per request, and the client shares the machine with the server
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
        async def one(i: int, kind: str, scheduled: float) -> None:
            method, url, body, headers = target.request(kind, i)
            try:
                async with client.request(method, url, json=body, headers=headers) as r:
                    await r.read()
                    status = r.status
            except (TimeoutError, aiohttp.ClientError):
                status = 0
            if i >= warm:
                results.append((kind, time.perf_counter() - scheduled, status))

        tasks = []
        start = time.perf_counter() + 0.05
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, kinds[rng.randrange(len(kinds))], scheduled)))
        measured_from = start + warm / rate
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - measured_from
    lat = [r[1] * 1000 for r in results]
    by_kind = {k: [r[1] * 1000 for r in results if r[0] == k] for k in MIX}
    row = {"rate": rate, "requests": len(results), "achieved_rps": round(len(results) / elapsed, 1),
           "p50_ms": round(percentile(lat, 50), 1), "p99_ms": round(percentile(lat, 99), 1),
           "max_ms": round(max(lat), 1),
           "status_5xx": sum(1 for r in results if r[2] >= 500), "status_429": sum(1 for r in results if r[2] == 429),
           "transport_errors": sum(1 for r in results if r[2] == 0),
           "other_4xx": sum(1 for r in results if 400 <= r[2] < 500 and r[2] != 429),
           "p99_ms_by_kind": {k: round(percentile(v, 99), 1) for k, v in by_kind.items() if v}}
    return row


def list_latency(url: str, headers: list[dict[str, str]], n: int, path: str = "/v1/jobs?limit=20") -> dict[str, float]:
    """Sequential first-page lists (one in flight): the server's own time plus loopback. The requests rotate
    over the keys, as the load does: one key alone would meet its read limit at this pace."""
    lat = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(10):
            client.get(path, headers=headers[i % len(headers)])
        for i in range(n):
            t = time.perf_counter()
            r = client.get(path, headers=headers[i % len(headers)])
            lat.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
    return {"p50_ms": round(percentile(lat, 50), 2), "p99_ms": round(percentile(lat, 99), 2)}


# ---------------------------------------------------------------- report

def cpu_table(result: dict[str, Any]) -> list[str]:
    """Who used the cores in each rate's window (warm-up included), as a share of the machine's capacity:
    a p99 missed while the service had the cores to itself reads differently from one missed beside others."""
    rows = [r for r in result["rates"] if "cpu_s" in r]
    if not rows:
        return []
    groups = [g for g in rows[0]["cpu_s"] if not g.startswith("machine_")]
    lines = ["", "CPU used in each rate's window, % of all cores (a 2-core machine has 200%):", "",
             "| rate | " + " | ".join(groups) + " | machine busy |", "|---" * (len(groups) + 2) + "|"]
    for r in rows:
        c = r["cpu_s"]
        pct = 100 * (os.cpu_count() or 1) / (c["machine_capacity"] or 1.0)  # CPU seconds -> % of one core
        lines.append(f"| {r['rate']:g} | " + " | ".join(f"{c[g] * pct:.0f}" for g in groups)
                     + f" | {c['machine_busy'] * pct:.0f} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines = [f"API load, {result['workers']} uvicorn process(es), {result['jobs']} jobs + "
             f"{result['events']} events in Postgres, mix {result['mix']}, {result['seconds']} s per rate; "
             f"load average before/after {result['load_average_before_after']}",
             "", "| rate (req/s) | achieved | p50 ms | p99 ms | max ms | 5xx | 429 | transport errors |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rates"]:
        lines.append(f"| {r['rate']:g} | {r['achieved_rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                     f"{r['status_5xx']} | {r['status_429']} | {r['transport_errors']} |")
    lines += cpu_table(result)
    best = result["highest_rate_p99_under_100ms"]
    lines += ["", f"Highest rate with p99 < {P99_TARGET_MS:g} ms and no 5xx: {best if best else 'none'} req/s", "",
              "| jobs of the owner | first page p50 ms | p99 ms | page halfway down p50 ms | p99 ms |",
              "|---|---|---|---|---|"]
    for n, m in result["list_latency"].items():
        lines.append(f"| {n} | {m['first']['p50_ms']} | {m['first']['p99_ms']} | {m['deep']['p50_ms']} | "
                     f"{m['deep']['p99_ms']} |")
    lines.append("")
    for name, plan in result["plans"].items():
        lines += [f"{name}:", "```", plan, "```"]
    return "\n".join(lines)


def markdown_hostile(result: dict[str, Any]) -> str:
    """One row per rate: the normal mix's figures, each API process's peak RSS, what the hostile clients saw."""
    h = result["hostile"]
    lines = [f"API load beside hostile clients: {h['streams_per_process']} event streams per API process "
             f"({result['workers']} processes), {h['slow_clients']} slow clients (a line or byte every "
             f"{h['slow_interval_s']:g} s), {h['uploads']} keyless chunked {h['upload_mib']} MiB uploads; "
             f"{result['seconds']} s per rate; load average before/after {result['load_average_before_after']}",
             "", "| rate | achieved | p50 ms | p99 ms | 5xx | 429 | transport errors | peak RSS MiB per API process "
             "| streams open | stream events | slow closed (max s headers/body) | uploads: answers, MiB before "
             "answer (max), fully sent |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rates"]:
        x = r.get("hostile", {})
        rss = " / ".join(f"{v['peak_rss_mib']}" for v in r["rss"].values())
        slow_max = x.get("slow_seconds_max", {})
        lines.append(
            f"| {r['rate']:g} | {r['achieved_rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['status_5xx']} | "
            f"{r['status_429']} | {r['transport_errors']} | {rss} | {x.get('streams_open')} | "
            f"{x.get('stream_events')} | {x.get('slow_closed')} ({slow_max.get('headers', '-')}/"
            f"{slow_max.get('body', '-')}) | {x.get('upload_statuses')}, {x.get('upload_mib_before_answer_max')}, "
            f"{x.get('uploads_fully_sent')}/{x.get('uploads_ended')} |")
    lines += cpu_table(result)
    best = result["highest_rate_p99_under_100ms"]
    lines += ["", f"Highest rate with p99 < {P99_TARGET_MS:g} ms and no 5xx: {best if best else 'none'} req/s; "
              f"server tracebacks logged: {result['server_errors_logged']}"]
    return "\n".join(lines)


LIMITS_FOR_LOAD = {  # far above the load: the limiter runs on every request but refuses none
    "SPARSETUNE_RATE_READS_PER_SECOND": "1000000", "SPARSETUNE_RATE_READS_BURST": "1000000",
    "SPARSETUNE_RATE_WRITES_PER_SECOND": "1000000", "SPARSETUNE_RATE_WRITES_BURST": "1000000",
    "SPARSETUNE_MAX_ACTIVE_JOBS_PER_OWNER": "100000000"}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="50,100,200,300,400", help="requests per second, comma-separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per rate")
    ap.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds at the same rate first")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn processes (one per core), round-robin")
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--events-per-job", type=int, default=5)
    ap.add_argument("--list-requests", type=int, default=300, help="sequential lists per list-latency figure")
    ap.add_argument("--keys", type=int, default=4, help="API keys of the one owner the load is spread over")
    ap.add_argument("--hostile", action="store_true", help="run the normal mix beside bench/hostile.py's clients")
    ap.add_argument("--streams", type=int, default=500, help="--hostile: event streams held per API process")
    ap.add_argument("--slow-clients", type=int, default=20, help="--hostile: slow connections held")
    ap.add_argument("--slow-interval", type=float, default=3.0, help="--hostile: seconds between a slow "
                                                                      "client's header lines or body bytes")
    ap.add_argument("--uploads", type=int, default=4, help="--hostile: concurrent keyless chunked uploads")
    ap.add_argument("--upload-mib", type=int, default=250, help="--hostile: size of each upload")
    ap.add_argument("--out", type=Path, default=None,
                    help="default bench/results/api_load.json (api_load_hostile.json with --hostile)")
    args = ap.parse_args()
    if args.out is None:
        args.out = ROOT / "bench" / "results" / ("api_load_hostile.json" if args.hostile else "api_load.json")
    return args


def start_hostile(args: argparse.Namespace, bases: list[str], tmp: Path) -> HostileProcess:
    """A second owner (the hostile one) with a dataset and a few queued jobs whose event streams it holds."""
    from service.db import session_scope
    from service.security import create_key

    with session_scope() as s:
        key = create_key(s, "hostile")[1]
    headers = {"Authorization": f"Bearer {key}"}
    data = b'{"prompt": "p", "completion": "c"}\n' * 16
    r = httpx.post(f"{bases[0]}/v1/datasets", headers=headers, files={"file": ("h.jsonl", data)}, timeout=30)
    r.raise_for_status()
    body = {"model": "cfg-llama", "training_dataset": r.json()["id"], "method": "smt", "budget": 0.01,
            "hyperparameters": {"steps": 2, "batch_size": 2, "max_seq_len": 32}}
    job_ids = []
    for _ in range(10):
        r = httpx.post(f"{bases[0]}/v1/jobs", headers=headers, json=body, timeout=30)
        r.raise_for_status()
        job_ids.append(r.json()["id"])
    cfg = {"bases": bases, "key": key, "job_ids": job_ids, "job_body": body, "streams": args.streams,
           "ramp": 100, "create_every": 1.0, "slow_clients": args.slow_clients,
           "slow_interval": args.slow_interval, "uploads": args.uploads, "upload_bytes": args.upload_mib * 2**20}
    hostile = HostileProcess(cfg, tmp / "hostile.log")
    ready = hostile.ready()
    print(f"hostile clients ready: {ready['streams_open']} streams open", file=sys.stderr)
    return hostile


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(ROOT))
    rng = random.Random(0)
    tmp = Path(tempfile.mkdtemp(prefix="st-api-load-"))
    (tmp / "cfg").mkdir()
    (tmp / "cfg" / "config.json").write_text(json.dumps(TINY_LLAMA))
    queue = f"st-bench-{secrets.token_hex(4)}"
    env = {"BROKER_URL": REDIS, "SPARSETUNE_QUEUE": queue, "SPARSETUNE_HOME": str(tmp / "home"),
           "SPARSETUNE_MODELS": json.dumps({"cfg-llama": str(tmp / "cfg")}), "SPARSETUNE_ENV": "local",
           **LIMITS_FOR_LOAD}
    # every stream, load connection and hostile socket is a descriptor, in the servers (who inherit the limit)
    # and in this process's hostile child: 1024, a common default, is not enough for 500 streams a process
    files_limit = raise_open_files(2 * args.workers * (args.streams if args.hostile else 0) + 4096)
    load_before = list(os.getloadavg())  # other work on the machine shares its cores: say how much there was
    name, url = create_database()
    env["DATABASE_URL"] = url
    os.environ.update(env)
    procs: list[subprocess.Popen] = []
    hostile: HostileProcess | None = None
    try:
        from service.db import get_engine, session_scope
        from service.heap import tune_for_serving
        from service.security import create_key

        with session_scope() as s:
            row, first_key = create_key(s, "bench")
            owner_id = row.owner_id
        keys = [first_key]
        for i in range(1, args.keys):
            with session_scope() as s:
                keys.append(create_key(s, f"bench-{i}", owner_id)[1])
        bases = []
        for w in range(args.workers):
            proc, url_w = start_server(env, tmp / f"api{w}.log")
            procs.append(proc)
            bases.append(url_w)
        base = bases[0]
        headers = {"Authorization": f"Bearer {first_key}"}
        data = b'{"prompt": "p", "completion": "c"}\n' * 16
        ds = httpx.post(f"{base}/v1/datasets", headers=headers, files={"file": ("t.jsonl", data)}).json()["id"]
        engine = get_engine()
        small = min(1000, args.jobs)
        job_ids = seed_jobs(engine, owner_id, ds, 0, small, args.events_per_job, rng)
        explain(engine, owner_id, job_ids[0])  # ANALYZE
        lists: dict[str, Any] = {}

        def measure_lists(n: int) -> None:
            deep = f"/v1/jobs?limit=20&after={middle_job(engine, owner_id, n)}"
            every_key = [{"Authorization": f"Bearer {k}"} for k in keys]
            lists[str(n)] = {"first": list_latency(base, every_key, args.list_requests),
                             "deep": list_latency(base, every_key, args.list_requests, deep)}

        if not args.hostile:  # the hostile run is about the mix under attack: no list or plan figures
            measure_lists(small)
            print(f"seeded {small} jobs: list {lists[str(small)]}", file=sys.stderr)
        for start in range(small, args.jobs, 5000):
            job_ids += seed_jobs(engine, owner_id, ds, start, min(5000, args.jobs - start), args.events_per_job, rng)
        plans = explain(engine, owner_id, middle_job(engine, owner_id, args.jobs))
        if not args.hostile:
            measure_lists(args.jobs)
            print(f"seeded {args.jobs} jobs: list {lists[str(args.jobs)]}", file=sys.stderr)
        target = Target(bases, keys, job_ids, ds, rng)
        rows = []
        with RssSampler({f"api{w}": proc.pid for w, proc in enumerate(procs)}) as rss:
            if args.hostile:
                hostile = start_hostile(args, bases, tmp)
            before = hostile.snapshot() if hostile else {}
            groups = {f"api{w}": (lambda p=proc.pid: [p]) for w, proc in enumerate(procs)}
            groups |= {"postgres": lambda: pids_named("postgres"), "load client": lambda: [os.getpid()]}
            if hostile:
                groups["hostile"] = lambda: [hostile.proc.pid]
            cpu = CpuMeter(groups)
            # the load client's own collector pauses would count as the server's latency (latency runs from the
            # scheduled send): the same tuning as the servers' (service/heap.py), the seeding's objects frozen
            tune_for_serving()
            rss.take()  # each rate's window starts here
            for rate in [float(r) for r in args.rates.split(",")]:
                row = asyncio.run(open_loop(target, rate, args.seconds, args.warmup, rng))
                row["rss"] = rss.take()
                row["cpu_s"] = cpu.take()
                if hostile:
                    after = hostile.snapshot()
                    row["hostile"], before = delta(before, after), after
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
                if row["achieved_rps"] < 0.8 * rate:  # saturated: higher rates only queue longer
                    print(f"saturated at {rate:g} req/s; higher rates skipped", file=sys.stderr)
                    break
            final = hostile.stop() if hostile else None
        ok = [r["rate"] for r in rows if r["p99_ms"] < P99_TARGET_MS and r["status_5xx"] == 0
              and r["transport_errors"] == 0 and r["achieved_rps"] >= 0.95 * r["rate"]]
        result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "workers": args.workers,
                  "load_average_before_after": [load_before, list(os.getloadavg())],
                  "cpus": os.cpu_count(), "jobs": args.jobs, "events": args.jobs * args.events_per_job,
                  "keys": args.keys, "mix": MIX, "seconds": args.seconds, "rates": rows,
                  "open_files_limit": list(files_limit),
                  "highest_rate_p99_under_100ms": max(ok) if ok else None, "list_latency": lists, "plans": plans,
                  "server_errors_logged": sum((tmp / f"api{w}.log").read_text().count("Traceback")
                                              for w in range(args.workers))}
        if args.hostile:
            result["hostile"] = {"streams_per_process": args.streams, "slow_clients": args.slow_clients,
                                 "slow_interval_s": args.slow_interval, "uploads": args.uploads,
                                 "upload_mib": args.upload_mib, "final": final}
            result["server_log_tail"] = {f"api{w}": (tmp / f"api{w}.log").read_text()[-2000:]
                                         for w in range(args.workers)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(markdown_hostile(result) if args.hostile else markdown(result))
        return 0
    finally:
        if hostile is not None:
            hostile.stop()
        for proc in procs:
            stop_server(proc)
        from service.db import reset_engines

        reset_engines()
        drop_database(name)
        import redis

        r = redis.Redis.from_url(REDIS)
        stale = list(r.scan_iter(f"*{queue}*"))
        if stale:
            r.delete(*stale)


if __name__ == "__main__":
    sys.exit(main())
