"""The training loop: load → prepare the method → train → evaluate → save. Read it top to bottom.

Every method goes through the same path; the registry supplies the method, and the loop only knows the
:class:`~smt_core.base.Method` interface. The optimizer is built from the method's trainable parameters
(plus a new classification head): that is where sparse memory savings become real.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smt_core import checkpoint, distributed, memory, precision
from smt_core.artifacts import HEAD_PREFIX, library_versions, save_adapter
from smt_core.base import PrepareContext
from smt_core.callbacks import Callbacks, Cancelled
from smt_core.data import BatchPlan, encode, evaluate, loss_fn, loss_items, split_holdout
from smt_core.dataformats import DataFormatError, read_jsonl
from smt_core.models import load_model, load_tokenizer, resolve_model, weights_sha256
from smt_core.registry import get_method
from smt_core.spec import TrainSpec
from smt_core.targets import base_param_count, find_sites, resolve_budget

DEFAULT_EPOCHS = 1.0
HEAD_LEARNING_RATE = 2e-3


@dataclass
class RunResult:
    metrics: dict[str, Any]
    out_dir: Path
    files: dict[str, Path]
    blocks: dict[str, Any] | None
    main: bool = True  # False on ranks 1…N−1 of a data-parallel run: no metrics, no files


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``base_lr``, then linear decay to 0 at ``total`` (the reference schedule)."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * max(0.0, (total - step) / max(1, total - warmup))


def _file_sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def train(spec: TrainSpec, cb: Callbacks) -> RunResult:
    """One run; in a data-parallel run (``spec.num_devices`` processes, see smt_core.launch) every rank calls
    it: each takes its share of every global batch and the summed gradients make the single-process update.
    Rank 0 alone evaluates, writes checkpoints and the artifact, and returns the metrics."""
    started = time.time()
    world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    if world != spec.num_devices:
        raise ValueError(f"num_devices: the spec asks for {spec.num_devices} but {world} process(es) run; "
                         "start it with smt_core.run")
    solo_cb, cb = cb, distributed.shared_callbacks(cb)  # cb.check_stop now stops every rank at once
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    device = pick_device(spec.device) if world == 1 else distributed.device_for(spec.device)
    method = get_method(spec.method).from_options(spec.method_options)
    policy = precision.resolve(spec.precision, device)  # bf16 frozen weights + autocast, or fp32
    if policy.warning:
        cb.fire("on_log", message=policy.warning, level="warning")

    # ---- data and model ------------------------------------------------------------------------------
    cb.fire("on_phase", phase="loading")
    fmt, rows, label_names = read_jsonl(spec.train_data)
    if spec.eval_data:
        eval_fmt, eval_rows, eval_labels = read_jsonl(spec.eval_data)
        if eval_fmt != fmt:
            raise DataFormatError(f"eval_data: format {eval_fmt} differs from the training data's {fmt}")
        if label_names is not None and not set(eval_labels or []) <= set(label_names):
            raise DataFormatError(f"eval_data: labels {sorted(set(eval_labels) - set(label_names))} "
                                  "never appear in the training data")
    else:
        rows, eval_rows = split_holdout(rows, spec.holdout_fraction, spec.seed)
    if spec.max_eval_rows is not None:
        eval_rows = eval_rows[:spec.max_eval_rows]

    ref = resolve_model(spec.model)
    tok = load_tokenizer(ref)
    task = "classification" if fmt == "classification" else "causal_lm"
    frozen_dtype = policy.frozen_dtype(trains_base_weights=not method.uses_budget)
    model, new_keys = load_model(ref, task, label_names, frozen_dtype, pad_token_id=tok.pad_token_id)
    model.to(device)
    head_prefixes = tuple(sorted({k.rsplit(".", 1)[0] + "." for k in new_keys}))
    base_params = base_param_count(model, head_prefixes)
    total_params = base_param_count(model)
    budget = resolve_budget(spec.budget, base_params) if method.uses_budget else None

    for p in model.parameters():  # everything frozen; the method decides what trains
        p.requires_grad_(False)
    # named now: a wrapping method (PEFT) renames parameters later
    head_named = {n: p for n, p in model.named_parameters() if head_prefixes and n.startswith(head_prefixes)}
    head = list(head_named.values())
    for p in head:  # a new classification head trains in every method, in fp32 even on a bf16 model
        p.data = p.data.float()
        p.requires_grad_(True)
    amp = policy.autocast()

    def amp_loss(m, batch):
        """The loss to backpropagate: with several ranks, this rank's token-weighted share of the global
        batch's mean (a collective: every rank calls it at the same point)."""
        def loss_of(b):
            with amp():
                return loss_fn(m, b)

        return distributed.weighted_loss(loss_of, batch, loss_items(batch))

    train_enc = encode(rows, fmt, tok, spec.max_seq_len, label_names)
    eval_enc = encode(eval_rows, fmt, tok, spec.max_seq_len, label_names)
    plan = BatchPlan(len(train_enc.examples), spec.batch_size, spec.seed)
    if spec.steps is not None:
        total_steps = spec.steps
    else:
        total_steps = max(1, math.ceil((spec.epochs or DEFAULT_EPOCHS) * plan.steps_per_epoch))
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    sites = find_sites(model, spec.targets)
    pad = tok.pad_token_id

    # ---- the method: fresh (SMT runs its selection warm-up here) or rebuilt from a checkpoint --------
    model.train()
    resumed = spec.resume and checkpoint.exists(out)
    if resumed:
        state, saved_adapter = checkpoint.load_meta(out)
        model = method.load(model, sites, saved_adapter, state["method_info"])
        start_step, blocks = int(state["step"]), state.get("blocks")
        cb.fire("on_log", message=f"resumed from the checkpoint at step {start_step}", level="info")
    else:
        cb.fire("on_phase", phase=method.prepare_phase)
        ctx = PrepareContext(model=model, sites=sites, budget=budget, base_params=base_params, device=device,
                             callbacks=cb, batches=lambda: plan.iterate(train_enc.examples, pad, device,
                                                                        rank=rank, world=world),
                             loss_fn=amp_loss, steps_per_epoch=plan.steps_per_epoch, head_parameters=head,
                             total_steps=total_steps)
        model = method.prepare(ctx)
        start_step, blocks = 0, method.blocks_report()
        if blocks is not None:
            cb.fire("on_selection", **blocks)

    params = method.trainable_parameters(model)
    for p in params:
        p.requires_grad_(True)
    head_ids = {id(p) for p in head}
    params = [p for p in params if id(p) not in head_ids]
    train_params = params + head
    distributed.broadcast_params(train_params)  # replicas start from rank 0's values
    lr = spec.learning_rate or method.learning_rate_for(base_params)  # lower on larger models
    # a random new head needs a higher rate than the pretrained weights' small corrections
    head_lr = spec.head_learning_rate or max(lr, HEAD_LEARNING_RATE)
    groups = [g for g in ({"params": params, "lr": lr, "base_lr": lr},
                          {"params": head, "lr": head_lr, "base_lr": head_lr}) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=spec.weight_decay)  # decay acts on ΔW itself
    if resumed:
        checkpoint.restore(out, train_params, opt)
    report = method.report(model)
    info = {**report, "total_params": total_params, "base_params": base_params, "budget_params": budget,
            "head_params": sum(p.numel() for p in head), "total_steps": total_steps,
            "train_rows": len(rows), "eval_rows": len(eval_rows), "truncated_rows": train_enc.truncated,
            "format": fmt}
    cb.fire("on_info", **info)

    # ---- training ------------------------------------------------------------------------------------
    cb.fire("on_phase", phase="training")
    meter = memory.ActivationMeter(model)
    batches = plan.iterate(train_enc.examples, pad, device, start=start_step, rank=rank, world=world)
    losses: list[float] = []
    tokens = 0
    mem: dict[str, int] = {}
    grads = 0
    def save_checkpoint(done: int) -> None:
        path = checkpoint.save(out, done, train_params, opt, method.adapter_tensors(model),
                               {"method_info": method.adapter_info(), "blocks": blocks})
        cb.fire("on_checkpoint", step=done, path=str(path))

    def run_eval(done: int) -> dict[str, Any]:
        with amp():
            scores = evaluate(model, tok, eval_enc, fmt, spec.batch_size, spec.max_seq_len, device,
                              solo_cb.check_stop)  # rank 0 alone: not a collective stop check
        cb.fire("on_eval", step=done, **scores)
        return scores

    for step in range(start_step, total_steps):
        try:
            cb.check_stop()
        except Cancelled as exc:
            if exc.checkpoint and step > start_step and main:  # handed back: keep every finished step
                save_checkpoint(step)
            raise
        t0 = time.time()
        batch = next(batches)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, group["base_lr"], spec.lr_warmup_steps, total_steps)
        with meter.track():
            loss = amp_loss(model, batch)
        loss.backward()
        distributed.sync_gradients(train_params)  # the sum of the ranks' weighted gradients
        grads = max(grads, memory.grad_bytes(train_params))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_loss, n_tok = distributed.sum_scalars([loss.item(), int(batch["attention_mask"].sum())])
        n_tok = int(n_tok)
        tokens += n_tok
        losses.append(step_loss)
        dt = time.time() - t0
        mem = memory.snapshot(model, train_params, opt, meter.max, device, gradients=grads)
        if report.get("selection_bytes"):  # SMT's warm-up: gradient sums, freed before training
            mem["selection"] = int(report["selection_bytes"])
        cb.fire("on_step_end", step=step + 1, total_steps=total_steps, train_loss=losses[-1],
                learning_rate=opt.param_groups[0]["lr"], tokens_per_second=n_tok / max(dt, 1e-9),
                trained_tokens=tokens, seconds=dt, memory=mem)
        done = step + 1
        if not main:
            continue
        if spec.eval_every and done % spec.eval_every == 0 and done < total_steps and eval_enc.examples:
            try:
                run_eval(done)
            except Cancelled:
                pass  # the stop stands: the next step's check stops every rank together (and keeps this step)
        if spec.checkpoint_every and done % spec.checkpoint_every == 0 and done < total_steps:
            save_checkpoint(done)

    trained = dict(method.adapter_tensors(model))
    for n, p in head_named.items():
        trained[HEAD_PREFIX + n] = p.detach()
    distributed.check_replicas(trained)  # the last collective: every rank trained the same tensors
    if not main:
        return RunResult({}, out, {}, blocks, main=False)

    # ---- evaluation and the artifact -----------------------------------------------------------------
    cb.fire("on_phase", phase="evaluating")
    scores: dict[str, Any] = {"eval_loss": None, "eval_accuracy": None}
    if eval_enc.examples:
        scores = run_eval(total_steps)
    cb.fire("on_phase", phase="saving")
    tail = losses[-min(len(losses), 10):]
    metrics = {
        "train_loss": sum(tail) / len(tail) if tail else None,
        **scores,
        "trainable_params": report["trainable_params"],
        "delta_nonzeros": report.get("delta_nonzeros"),
        "head_params": info["head_params"],
        "total_params": total_params,
        "trained_tokens": tokens,
        "steps": total_steps,
        "truncated_rows": train_enc.truncated,
        "memory": mem,
        "precision": policy.name,
        "seconds": time.time() - started,
    }
    tensors = trained
    manifest = {
        "format": "sparsetune-adapter/1",
        "engine_version": library_versions()["sparsetune"],
        "libraries": library_versions(),
        "method": spec.method,
        "method_options": method.config.to_dict(),
        "method_info": method.adapter_info(),
        "targets": list(spec.targets),
        "budget": spec.budget,
        "budget_params": budget,
        "trainable_params": report["trainable_params"],
        "delta_nonzeros": report.get("delta_nonzeros"),
        "base_model": {"id": ref.id, "path": ref.path if ref.local else None, "sha256": weights_sha256(ref),
                       "architecture": (model.config.architectures or [type(model).__name__])[0],
                       "model_type": model.config.model_type, "base_params": base_params},
        "task": task,
        "dataset": {"format": fmt, "train_sha256": _file_sha256(spec.train_data), "train_rows": len(rows),
                    "eval_sha256": _file_sha256(spec.eval_data) if spec.eval_data else None,
                    "eval_rows": len(eval_rows), "held_out": spec.eval_data is None and bool(eval_rows)},
        "seed": spec.seed,
        "hyperparameters": {"learning_rate": lr, "head_learning_rate": head_lr if head else None,
                            "schedule": "linear", "lr_warmup_steps": spec.lr_warmup_steps,
                            "steps": total_steps, "epochs": spec.epochs, "batch_size": spec.batch_size,
                            "max_seq_len": spec.max_seq_len, "weight_decay": spec.weight_decay,
                            "num_devices": spec.num_devices,
                            "gradient_checkpointing": spec.gradient_checkpointing,
                            "precision": policy.name},
        "label_names": label_names,
        "head_tensors": sorted(k for k in tensors if k.startswith(HEAD_PREFIX)),
        "metrics": metrics,
        "created_at": int(time.time()),
    }
    files = save_adapter(out, tensors, manifest)
    shutil.rmtree(out / checkpoint.DIRNAME, ignore_errors=True)
    return RunResult(metrics, out, files, blocks)
