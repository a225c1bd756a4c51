"""The engine's commands: ``sparsetune train | merge | export``. Exit 0 ok, 1 the run failed, 2 bad input.

``add_engine_commands`` mounts them on the full ``sparsetune`` parser (cli/commands.py adds the service's
commands beside them); ``python -m smt_core.cli`` runs them alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from smt_core import hyperparameters as hp
from smt_core.spec import PRECISIONS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: exit 2 with the message."""


def _options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"method-option: expected KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def add_engine_commands(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="fine-tune locally and write an adapter folder")
    t.add_argument("--model", required=True, help="local HF folder, hub id, or alias (smollm2-135m, minilm-l6)")
    t.add_argument("--data", required=True, help="training JSONL (prompt_completion|chat|classification|multiple_choice)")
    t.add_argument("--eval", dest="eval_data",
                   help="evaluation JSONL (default: hold out --holdout-fraction of --data, seeded)")
    t.add_argument("--method", required=True, help="smt | snell | lora | dora | full")
    steps_or_epochs = t.add_mutually_exclusive_group()
    for h in hp.ENGINE:
        h.add_flag(steps_or_epochs if h in (hp.STEPS, hp.EPOCHS) else t, h.default)
    t.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda if present)")
    t.add_argument("--precision", choices=PRECISIONS,
                   help="bf16: frozen weights in bf16 + bf16 autocast (trainable tensors stay fp32); auto (default, "
                        "or $SPARSETUNE_PRECISION): bf16 on a GPU with native bf16, else fp32")
    t.add_argument("--resume", action="store_true", help="continue from --out/checkpoint if present")
    t.add_argument("--init-from", dest="init_from", metavar="DIR",
                   help="continue a finished run: start from the adapter in DIR (same model, method, targets and "
                        "budget); the optimizer and learning-rate schedule start afresh")
    t.add_argument("--out", required=True, help="output folder")
    t.set_defaults(handler=cmd_train)

    m = sub.add_parser("merge", help="write base + adapter as a standard HF model folder")
    m.add_argument("--model", help="base model (default: the one recorded in the adapter)")
    m.add_argument("--adapter", required=True)
    m.add_argument("--out", required=True)
    m.set_defaults(handler=cmd_merge)

    e = sub.add_parser("export", help="convert an adapter to another format")
    e.add_argument("--adapter", required=True)
    e.add_argument("--format", required=True, choices=["peft-shira"])
    e.add_argument("--model", help="base model (default: the one recorded in the adapter)")
    e.add_argument("--out", required=True)
    e.set_defaults(handler=cmd_export)


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, default=str) if getattr(args, "json", False) else text)


def cmd_train(args: argparse.Namespace) -> int:
    from smt_core import Callbacks, TrainSpec, run

    try:
        spec = TrainSpec(model=args.model, train_data=args.data, eval_data=args.eval_data, method=args.method,
                         method_options=_options(args.method_option), resume=args.resume, init_from=args.init_from,
                         device=args.device,
                         precision=args.precision, out_dir=args.out, **{h.name: getattr(args, h.name) for h in hp.ENGINE})
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    cb = Callbacks()
    bar = _progress(cb, enabled=sys.stderr.isatty() and not args.json)
    try:
        result = run(spec, cb)
    finally:
        if bar is not None:
            bar.close()
    if not result.main:  # rank 1…N−1 under torchrun: rank 0 reports
        return EXIT_OK
    m = result.metrics
    text = (f"wrote {result.out_dir}/adapter.safetensors · trainable {m['trainable_params']:,} of "
            f"{m['total_params']:,} params · train_loss {m['train_loss']:.4f}"
            + (f" · eval_loss {m['eval_loss']:.4f}" if m.get("eval_loss") is not None else "")
            + (f" · eval_accuracy {m['eval_accuracy']:.3f}" if m.get("eval_accuracy") is not None else "")
            + f" · {m['seconds']:.1f}s")
    _emit(args, {"out": str(result.out_dir), "metrics": m}, text)
    return EXIT_OK


def _progress(cb, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="step", dynamic_ncols=True)

    def phase(p):
        bar.set_description(p["phase"])

    def step(p):
        bar.total = p["total_steps"]
        bar.n = p["step"]
        bar.set_postfix(loss=f"{p['train_loss']:.4f}")
        bar.refresh()

    cb.add("on_phase", phase).add("on_step_end", step)
    return bar


def cmd_merge(args: argparse.Namespace) -> int:
    from smt_core.merge import merge_adapter

    out = merge_adapter(args.adapter, args.out, args.model)
    _emit(args, {"out": str(out)}, f"wrote a merged model to {out}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from smt_core.export import export_shira

    out = export_shira(args.adapter, args.out, args.model)
    _emit(args, {"out": str(out), "format": args.format}, f"wrote a {args.format} adapter to {out}")
    return EXIT_OK


def run_handler(args: argparse.Namespace) -> int:
    """Call a command's handler, mapping errors to exit codes: bad input 2, a failed run 1."""
    from smt_core.dataformats import DataFormatError

    try:
        return args.handler(args)
    except (UsageError, DataFormatError, ValueError, FileNotFoundError) as exc:
        _error(args, exc, "invalid_request")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error(args, "interrupted", "cancelled")
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 — a failed run: say what happened, exit 1
        _error(args, f"{type(exc).__name__}: {exc}", "run_failed")
        return EXIT_FAILED


def _error(args: argparse.Namespace, exc: object, code: str) -> None:
    details = getattr(exc, "details", None)
    if getattr(args, "json", False):
        print(json.dumps({"error": {"code": code, "message": str(exc), **({"details": details} if details else {})}}))
    else:
        print(f"error: {exc}", file=sys.stderr)
        for d in (details or [])[:10]:
            print(f"  line {d['line']}: {d.get('field') or '-'}: {d['message']}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsetune", description="sparse fine-tuning engine")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_engine_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
