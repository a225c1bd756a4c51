"""``sparsetune``: the engine's train/merge/export plus the service's up, keys, datasets and jobs.

Exit codes: 0 ok, 1 the job or run failed, 2 bad usage or input. ``--json`` prints JSON for any command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cli.client import ApiError, Client
from smt_core import hyperparameters

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input: exit 2."""


def emit(args: argparse.Namespace, payload: Any, text: str | None = None) -> None:
    if getattr(args, "json", False) or text is None:
        print(json.dumps(payload, indent=None if getattr(args, "json", False) else 2, default=str))
    else:
        print(text)
    sys.stdout.flush()


def client(args: argparse.Namespace) -> Client:
    return Client(args.api_url)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# ---- keys (local administration: talks to the database directly) ---------------------------------------
def cmd_keys_create(args: argparse.Namespace) -> int:
    from cli.bootstrap import migrate
    from service.db import session_scope
    from service.security import create_key

    migrate()
    try:
        with session_scope() as s:
            row, key = create_key(s, args.name, args.owner)
            info = {"id": row.id, "owner": row.owner_id, "name": row.name, "key": key}
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    emit(args, info, key)  # only the key on stdout
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from cli.bootstrap import migrate
    from service.db import session_scope
    from service.models import ApiKey

    migrate()
    with session_scope() as s:
        rows = [{"id": k.id, "owner": k.owner_id, "name": k.name, "prefix": k.prefix, "created_at": int(k.created_at),
                 "revoked": k.revoked_at is not None} for k in s.scalars(select(ApiKey).order_by(ApiKey.created_at))]
    emit(args, {"object": "list", "data": rows}, "\n".join(
        f"{r['id']}  {r['owner']}  {r['name']}  st_{r['prefix']}_…{'  revoked' if r['revoked'] else ''}" for r in rows))
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from cli.bootstrap import migrate
    from service.db import session_scope
    from service.security import revoke_key

    migrate()
    with session_scope() as s:
        row = revoke_key(s, args.id)
        if row is None:
            raise UsageError(f"no key {args.id!r}")
    emit(args, {"id": args.id, "revoked": True}, f"revoked {args.id}")
    return EXIT_OK


# ---- datasets and jobs (through the REST API) ------------------------------------------------------------
def cmd_datasets_upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no such file {path}")
    ds = client(args).upload(path)
    emit(args, ds, f"{ds['id']}  {ds['format']}  {ds['rows']} rows  sha256 {ds['sha256']}")
    return EXIT_OK


def cmd_datasets_list(args: argparse.Namespace) -> int:
    page = client(args).request("GET", "/v1/datasets", params={"limit": args.limit})
    emit(args, page, "\n".join(f"{d['id']}  {d['filename']}  {d['format']}  {d['rows']} rows" for d in page["data"]))
    return EXIT_OK


def job_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/jobs body; hyperparameters not given are left out, so the service's defaults apply."""
    hp = {h.name: getattr(args, h.name) for h in hyperparameters.JOB if getattr(args, h.name) is not None}
    options = {}
    for pair in args.method_option:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"method-option: expected KEY=VALUE, got {pair!r}")
        options[key.strip().replace("-", "_")] = _value(value.strip())
    body: dict[str, Any] = {"model": args.model, "training_dataset": args.training_dataset, "method": args.method,
                            "hyperparameters": hp, "method_options": options, "seed": args.seed,
                            "targets": [t.strip() for t in args.targets.split(",") if t.strip()]}
    if args.budget is not None:
        body["budget"] = _value(args.budget)
    if args.validation_dataset:
        body["validation_dataset"] = args.validation_dataset
    if args.suffix:
        body["suffix"] = args.suffix
    if getattr(args, "init_from", None):
        body["init_from"] = args.init_from
    return body


def _job_line(j: dict[str, Any]) -> str:
    steps = f"{j['steps_completed']}/{j['total_steps'] or '?'}"
    err = f"  error: {j['error']['message']}" if j.get("error") else ""
    return f"{j['id']}  {j['status']}  {j['method']}  {j['model']}  steps {steps}{err}"


def cmd_jobs_create(args: argparse.Namespace) -> int:
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    job = client(args).request("POST", "/v1/jobs", json=job_body(args), headers=headers)
    emit(args, job, job["id"])
    return EXIT_OK


def cmd_jobs_list(args: argparse.Namespace) -> int:
    params = {"limit": args.limit, **({"status": args.status} if args.status else {})}
    page = client(args).request("GET", "/v1/jobs", params=params)
    emit(args, page, "\n".join(_job_line(j) for j in page["data"]))
    return EXIT_OK


def cmd_jobs_show(args: argparse.Namespace) -> int:
    emit(args, client(args).request("GET", f"/v1/jobs/{args.id}"))
    return EXIT_OK


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    """Follow the live stream to the end; exit 1 unless the job succeeded."""
    c = client(args)
    for ev in c.events(args.id):
        if args.json:
            print(json.dumps(ev), flush=True)
            continue
        d = ev["data"]
        if ev["type"] == "metric" and "train_loss" in d:
            print(f"step {d['step']}/{d.get('total_steps') or '?'}  loss {d['train_loss']:.4f}", flush=True)
        elif ev["type"] == "metric":
            print(f"eval at step {d['step']}: loss {d.get('eval_loss')}  accuracy {d.get('eval_accuracy')}", flush=True)
        elif ev["type"] == "status":
            print(f"{d.get('status')}" + (f" ({d['phase']})" if d.get("phase") else ""), flush=True)
        elif ev["type"] == "log":
            print(d.get("message", ""), flush=True)
    job = c.request("GET", f"/v1/jobs/{args.id}")
    emit(args, job, _job_line(job))
    return EXIT_OK if job["status"] == "succeeded" else EXIT_FAILED


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    job = client(args).request("POST", f"/v1/jobs/{args.id}/cancel")
    emit(args, job, _job_line(job))
    return EXIT_OK


def cmd_jobs_download(args: argparse.Namespace) -> int:
    info = client(args).download(args.id, args.name, Path(args.out))
    emit(args, info, f"{info['path']}  {info['bytes']} bytes  sha256 {info['sha256']} (checked)")
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    from api.hosts import allow_bound_host
    from cli.bootstrap import serve

    allow_bound_host(args.host)
    if args.host in ("0.0.0.0", "::"):
        print("sparsetune up: on every interface; requests must name localhost or an IP address, or a host in "
              "SPARSETUNE_ALLOWED_HOSTS (e.g. SPARSETUNE_ALLOWED_HOSTS=sparsetune.example.com)", file=sys.stderr)
    return serve(args.host, args.port)


def cmd_worker(args: argparse.Namespace) -> int:
    """A worker alone (another machine, or one per GPU): same database and broker as the API."""
    env = dict(os.environ)
    if args.pool:
        env["SPARSETUNE_WORKER_POOL"] = args.pool
    os.execve(sys.executable, [sys.executable, "-m", "worker"], env)
    return 0  # not reached


def cmd_serve(args: argparse.Namespace) -> int:
    """An inference process alone (another machine, or one per GPU): same database as the API, which finds it
    by its heartbeat; models load on first use."""
    argv = [sys.executable, "-m", "inference"]
    if args.host is not None:
        argv += ["--host", args.host]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    os.execve(sys.executable, argv, dict(os.environ))
    return 0  # not reached


# ---- the parser ------------------------------------------------------------------------------------------
def _client_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-url", help="default $SPARSETUNE_API_URL or http://127.0.0.1:8000; key from $SPARSETUNE_API_KEY")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsetune", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    try:
        from smt_core.cli import add_engine_commands
    except ImportError:  # an engine without a CLI still leaves the service commands usable
        add_engine_commands = None
    if add_engine_commands is not None:
        add_engine_commands(sub)

    up = sub.add_parser("up", help="API + one worker (+ dashboard), foreground")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.set_defaults(handler=cmd_up)

    w = sub.add_parser("worker", help="one worker process (run one per GPU; other machines join with the "
                                      "same DATABASE_URL and BROKER_URL)")
    w.add_argument("--pool", help="the pool to serve (SPARSETUNE_POOLS); default $SPARSETUNE_WORKER_POOL or the largest")
    w.set_defaults(handler=cmd_worker)

    sv = sub.add_parser("serve", help="one inference process (the API forwards chat, completions and predict "
                                      "to it; other machines join with the same DATABASE_URL)")
    sv.add_argument("--host", help="default $SPARSETUNE_INFERENCE_HOST or 127.0.0.1")
    sv.add_argument("--port", type=int, help="default $SPARSETUNE_INFERENCE_PORT or 0 (a free port)")
    sv.set_defaults(handler=cmd_serve)

    keys = sub.add_parser("keys", help="API keys (local: talks to the database)").add_subparsers(dest="keys_cmd", required=True)
    k = keys.add_parser("create", help="print a new key (a new owner unless --owner)")
    k.add_argument("--name", required=True)
    k.add_argument("--owner")
    k.set_defaults(handler=cmd_keys_create)
    keys.add_parser("list").set_defaults(handler=cmd_keys_list)
    k = keys.add_parser("revoke")
    k.add_argument("id")
    k.set_defaults(handler=cmd_keys_revoke)

    ds = sub.add_parser("datasets", help="datasets through the API").add_subparsers(dest="ds_cmd", required=True)
    d = ds.add_parser("upload")
    d.add_argument("file")
    d.set_defaults(handler=cmd_datasets_upload)
    d = ds.add_parser("list")
    d.add_argument("--limit", type=int, default=20)
    d.set_defaults(handler=cmd_datasets_list)

    jobs = sub.add_parser("jobs", help="fine-tuning jobs through the API").add_subparsers(dest="jobs_cmd", required=True)
    j = jobs.add_parser("create")
    j.add_argument("--model", required=True)
    j.add_argument("--training-dataset", required=True)
    j.add_argument("--validation-dataset")
    j.add_argument("--method", required=True)
    _add_job_hyperparameters(j)
    j.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE")
    j.add_argument("--suffix")
    j.add_argument("--init-from", dest="init_from", metavar="JOB_ID",
                   help="continue this succeeded job (same model, method, targets and budget): start from its "
                        "adapter with a fresh optimizer and learning-rate schedule")
    j.add_argument("--idempotency-key")
    j.set_defaults(handler=cmd_jobs_create)
    j = jobs.add_parser("list")
    j.add_argument("--status")
    j.add_argument("--limit", type=int, default=20)
    j.set_defaults(handler=cmd_jobs_list)
    for name, fn in (("show", cmd_jobs_show), ("watch", cmd_jobs_watch), ("cancel", cmd_jobs_cancel)):
        j = jobs.add_parser(name)
        j.add_argument("id")
        j.set_defaults(handler=fn)
    j = jobs.add_parser("download")
    j.add_argument("id")
    j.add_argument("name", help="adapter.safetensors | adapter_config.json | peft-shira.tar | merged.tar")
    j.add_argument("--out", required=True)
    j.set_defaults(handler=cmd_jobs_download)

    for group in (ds, jobs):
        for p in group.choices.values():
            _client_opts(p)
    _accept_json_anywhere(sub)
    return parser


def _add_job_hyperparameters(j: argparse.ArgumentParser) -> None:
    """``jobs create``'s flags from the one definition (smt_core/hyperparameters.py). The budget and the job's
    hyperparameters default to absent (the service fills in its defaults); targets and seed are always sent."""
    j.add_argument(hyperparameters.BUDGET.flag, help=hyperparameters.BUDGET.help_text())  # JSON: int or float
    hyperparameters.TARGETS.add_flag(j, hyperparameters.TARGETS.default)
    hyperparameters.SEED.add_flag(j, hyperparameters.SEED.default)
    steps_or_epochs = j.add_mutually_exclusive_group()
    for h in hyperparameters.JOB:
        h.add_flag(steps_or_epochs if h in (hyperparameters.STEPS, hyperparameters.EPOCHS) else j)


def _accept_json_anywhere(sub: argparse._SubParsersAction) -> None:
    """`sparsetune jobs list --json` as well as `sparsetune --json jobs list`."""
    stack = list(sub.choices.values())
    while stack:
        p = stack.pop()
        if not any("--json" in a.option_strings for a in p._actions):
            p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                stack.extend(a.choices.values())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad usage, 0 for --help
        return int(exc.code or 0)
    if args.command in ("train", "merge", "export"):
        from smt_core.cli import run_handler

        return run_handler(args)
    try:
        return args.handler(args)
    except UsageError as exc:
        _error(args, str(exc), "invalid_request")
        return EXIT_USAGE
    except ApiError as exc:
        _error(args, str(exc), "api_error", exc.body)
        return EXIT_USAGE if 400 <= exc.status < 500 else EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


def _error(args: argparse.Namespace, message: str, code: str, body: Any = None) -> None:
    if getattr(args, "json", False):
        print(json.dumps(body if isinstance(body, dict) and "error" in body else
                         {"error": {"code": code, "message": message}}))
    print(f"error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
