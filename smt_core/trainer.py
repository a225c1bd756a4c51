"""The training loop: load data → load the model → prepare (or resume) the method → optimizer → train →
evaluate and save. Read :func:`train` top to bottom; each phase is a function below it.

Every method goes through the same path; the registry supplies the method, and the loop only knows the
:class:`~smt_core.base.Method` interface. The optimizer is built from the method's trainable parameters
(plus a new classification head): that is where sparse memory savings become real.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smt_core import checkpoint, distributed, lineage, manifest, memory, precision
from smt_core.artifacts import BEST, HEAD_PREFIX, library_versions, save_adapter, save_tensors
from smt_core.base import Method, PrepareContext
from smt_core.best import Keeper
from smt_core.callbacks import Callbacks, Cancelled
from smt_core.data import BatchPlan, Encoded, encode, evaluate, loss_fn, loss_items, split_holdout
from smt_core.dataformats import DataFormatError, read_jsonl
from smt_core.hyperparameters import DEFAULT_EPOCHS
from smt_core.methods.spec import resolve_budget
from smt_core.models import ModelRef, load_model, load_tokenizer, resolve_model, weights_sha256
from smt_core.registry import get_method
from smt_core.spec import TrainSpec
from smt_core.targets import base_param_count, find_sites

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


def train(spec: TrainSpec, cb: Callbacks) -> RunResult:
    """One run; in a data-parallel run (``spec.num_devices`` processes, see smt_core.launch) every rank calls
    it: each takes its share of every global batch and the summed gradients make the single-process update.
    Rank 0 alone evaluates, writes checkpoints and the artifact, and returns the metrics."""
    started = time.time()
    run, data, base, enc, state = begin(spec, cb)
    cb = run.cb
    opt = build_optimizer(spec, run.method, state.model, base)
    keeper = Keeper(spec.metric_for_best, spec.early_stopping_patience)
    if state.resumed:
        checkpoint.restore(run.out, opt.train_params, opt.optimizer)
        keeper.resume(state.best, run.out / checkpoint.DIRNAME, run.out)
    elif run.main:
        (run.out / BEST).unlink(missing_ok=True)  # an earlier run's best in this folder is not this run's
    report = run.method.report(state.model)
    info = {**report, "total_params": base.total_params, "base_params": base.base_params,
            "budget_params": base.budget, "head_params": sum(p.numel() for p in base.head),
            "total_steps": enc.total_steps, "train_rows": len(data.rows), "eval_rows": len(data.eval_rows),
            "truncated_rows": enc.train.truncated, "format": data.fmt}
    cb.fire("on_info", **info)

    cb.fire("on_phase", phase="training")
    keeper.write = best_writer(spec, run, data, base, enc, opt, report, state)
    progress = training_loop(spec, run, base, enc, state, opt, report, keeper)

    trained = trained_tensors(run, base, state)
    distributed.check_replicas(trained)  # the last collective: every rank trained the same tensors
    if not run.main:
        return RunResult({}, run.out, {}, state.blocks, main=False)

    cb.fire("on_phase", phase="evaluating")
    scores: dict[str, Any] = {"eval_loss": None, "eval_accuracy": None}
    if progress.last_eval is not None and progress.last_eval[0] == progress.steps:
        scores = progress.last_eval[1]  # stopped early right after an evaluation of these very weights
    elif enc.eval.examples:
        scores = progress.run_eval(progress.steps)
    cb.fire("on_phase", phase="saving")
    tail = progress.losses[-min(len(progress.losses), 10):]
    metrics = {"train_loss": sum(tail) / len(tail) if tail else None, **scores,
               "trainable_params": report["trainable_params"], "delta_nonzeros": report.get("delta_nonzeros"),
               "head_params": info["head_params"], "total_params": base.total_params,
               "trained_tokens": progress.tokens, "steps": progress.steps, "truncated_rows": enc.train.truncated,
               "memory": progress.memory, "precision": run.policy.name, "seconds": time.time() - started,
               "stopped_early": progress.stopped_early, "best": keeper.summary()}
    if report.get("selection") is not None:  # SMT: what it chose, by target and layer (README, "What is reported")
        metrics["selection"] = report["selection"]
    files = save_adapter(run.out, trained, run_manifest(spec, run, data, base, enc, opt, report, trained, metrics))
    if keeper.summary() is not None and (run.out / BEST).is_file():
        files[BEST] = run.out / BEST
    shutil.rmtree(run.out / checkpoint.DIRNAME, ignore_errors=True)
    return RunResult(metrics, run.out, files, state.blocks)


def begin(spec: TrainSpec, cb: Callbacks) -> tuple[Run, Data, Base, TrainData, Prepared]:
    """Phases 0–3: everything up to the model about to take its first step. Apart from :func:`train` so a test
    can hold that model (a continued run's equals its parent's adapted model here)."""
    run = _start(spec, cb)
    run.cb.fire("on_phase", phase="loading")
    data = load_data(spec)
    if run.parent is not None:  # a continued run keeps the parent's labels (its head's rows), in its order
        data.label_names = lineage.check_labels(run.parent, data.fmt, data.label_names)
    base = load_base(spec, run, data)
    if run.parent is not None:
        start_from_parent(spec, run, base)
    enc = encode_data(spec, data, base)
    return run, data, base, enc, prepare_or_resume(spec, run, base, enc)


def trained_tensors(run: Run, base: Base, state: Prepared) -> dict[str, torch.Tensor]:
    """What the adapter file holds: the method's tensors and a new classification head's."""
    trained = dict(run.method.adapter_tensors(state.model))
    for n, p in base.head_named.items():
        trained[HEAD_PREFIX + n] = p.detach()
    return trained


def best_writer(spec: TrainSpec, run: Run, data: Data, base: Base, enc: TrainData, opt: Optim,
                report: dict[str, Any], state: Prepared) -> Callable[[int, dict[str, Any]], None]:
    """Writes the adapter as it is now as ``adapter-best.safetensors`` (rank 0, after an evaluation that
    improved ``metric_for_best``). Its manifest is the run's, with the metrics of that evaluation; built once
    (it hashes the data files), since only the metrics differ from one best to the next."""
    made: dict[str, dict[str, Any]] = {}

    def write(step: int, scores: dict[str, Any]) -> None:
        trained = trained_tensors(run, base, state)
        if "manifest" not in made:
            made["manifest"] = run_manifest(spec, run, data, base, enc, opt, report, trained, {})
        best = {"metric": spec.metric_for_best, "value": scores.get(str(spec.metric_for_best)), "step": step}
        metrics = {"eval_loss": scores.get("eval_loss"), "eval_accuracy": scores.get("eval_accuracy"),
                   "steps": step, "best": best}
        save_tensors(run.out / BEST, trained, {**made["manifest"], "metrics": metrics})

    return write


# ---- phase 0: where and how it runs ----------------------------------------------------------------------
@dataclass
class Run:
    """What every phase shares: the process's place in the run, the method, the precision, the callbacks."""

    cb: Callbacks  # stop checks here are collective across ranks
    solo_cb: Callbacks  # rank 0's own (evaluation runs on rank 0 alone)
    world: int
    rank: int
    main: bool
    device: torch.device
    method: Method
    policy: precision.Precision
    out: Path
    parent: lineage.Parent | None = None  # the run this one continues (spec.init_from)


def _start(spec: TrainSpec, cb: Callbacks) -> Run:
    world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    if world != spec.num_devices:
        raise ValueError(f"num_devices: the spec asks for {spec.num_devices} but {world} process(es) run; "
                         "start it with smt_core.run")
    shared = distributed.shared_callbacks(cb)  # cb.check_stop now stops every rank at once
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    device = pick_device(spec.device) if world == 1 else distributed.device_for(spec.device)
    method = get_method(spec.method).from_options(spec.method_options)
    policy = precision.resolve(spec.precision, device)  # bf16 frozen weights + autocast, or fp32
    if policy.warning:
        shared.fire("on_log", message=policy.warning, level="warning")
    parent = lineage.open_parent(spec.init_from, spec.init_from_job) if spec.init_from else None
    return Run(shared, cb, world, rank, main, device, method, policy, out, parent)


# ---- phase 1: data ---------------------------------------------------------------------------------------
@dataclass
class Data:
    fmt: str
    rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    label_names: list[str] | None


def load_data(spec: TrainSpec) -> Data:
    """The training rows and the evaluation rows (a file of their own, else a seeded hold-out)."""
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
    return Data(fmt, rows, eval_rows, label_names)


# ---- phase 2: the base model, frozen, with a new head where the task needs one -------------------------
@dataclass
class Base:
    model: nn.Module
    tok: Any
    ref: ModelRef
    task: str
    head_named: dict[str, nn.Parameter]  # named at load: a wrapping method (PEFT) renames parameters later
    base_params: int
    total_params: int
    budget: int | None

    @property
    def head(self) -> list[nn.Parameter]:
        return list(self.head_named.values())


def load_base(spec: TrainSpec, run: Run, data: Data) -> Base:
    ref = resolve_model(spec.model)
    tok = load_tokenizer(ref)
    task = "classification" if data.fmt == "classification" else "causal_lm"
    frozen_dtype = run.policy.frozen_dtype(trains_base_weights=not run.method.uses_budget)
    model, new_keys = load_model(ref, task, data.label_names, frozen_dtype, pad_token_id=tok.pad_token_id)
    model.to(run.device)
    head_prefixes = tuple(sorted({k.rsplit(".", 1)[0] + "." for k in new_keys}))
    base_params = base_param_count(model, head_prefixes)
    budget = resolve_budget(spec.budget, base_params) if run.method.uses_budget else None
    for p in model.parameters():  # everything frozen; the method decides what trains
        p.requires_grad_(False)
    head_named = {n: p for n, p in model.named_parameters() if head_prefixes and n.startswith(head_prefixes)}
    for p in head_named.values():  # a new classification head trains in every method, in fp32 even on bf16
        p.data = p.data.float()
        p.requires_grad_(True)
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return Base(model, tok, ref, task, head_named, base_params, base_param_count(model), budget)


def start_from_parent(spec: TrainSpec, run: Run, base: Base) -> None:
    """A continued run: refuse a parent of another base model, method, targets or budget, and carry its
    classification head over (the method's tensors go in at prepare)."""
    assert run.parent is not None
    lineage.check_fits(run.parent, method=spec.method, model_id=base.ref.id, model_sha256=weights_sha256(base.ref),
                       targets=list(spec.targets), budget_params=base.budget)
    missing = sorted(set(run.parent.head) ^ set(base.head_named))
    if missing:
        raise lineage.ConfigError("init_from", f"the parent's classification head does not fit: {missing[:4]}")
    with torch.no_grad():
        for name, value in run.parent.head.items():
            base.head_named[name].copy_(value.to(base.head_named[name].dtype))


@dataclass
class TrainData:
    """Tokenised rows, the seeded batch plan (of optimizer steps) and the number of optimizer steps."""

    fmt: str
    train: Encoded
    eval: Encoded
    plan: BatchPlan
    total_steps: int
    pad: int | None


def encode_data(spec: TrainSpec, data: Data, base: Base) -> TrainData:
    train_enc = encode(data.rows, data.fmt, base.tok, spec.max_seq_len, data.label_names)
    eval_enc = encode(data.eval_rows, data.fmt, base.tok, spec.max_seq_len, data.label_names)
    # one plan step is one optimizer step: batch_size × accumulation rows, taken as micro-batches of batch_size
    plan = BatchPlan(len(train_enc.examples), spec.batch_size * spec.gradient_accumulation_steps, spec.seed)
    if spec.steps is not None:
        total_steps = spec.steps
    else:
        total_steps = max(1, math.ceil((spec.epochs or DEFAULT_EPOCHS) * plan.steps_per_epoch))
    return TrainData(data.fmt, train_enc, eval_enc, plan, total_steps, base.tok.pad_token_id)


Batch = dict[str, torch.Tensor]
StepBatch = list[Batch]  # one optimizer step's rows, as micro-batches (one without gradient accumulation)


def amp_loss_fn(run: Run, meter: memory.ActivationMeter | None = None
                ) -> Callable[[nn.Module, StepBatch | Batch], torch.Tensor]:
    """The loss of one optimizer step, given as micro-batches: the mean over the labelled tokens (rows, for
    classification) of all of them on all ranks, so an accumulated step's gradient is the larger batch's.

    Each micro-batch's mean is weighted by its share of those items. All but the last are backpropagated here,
    one at a time, so only one micro-batch's activations are alive at once (the point of accumulating); the
    result is the last one's weighted loss plus the others' values, detached: its value is the step's loss and
    its ``backward()`` completes the step's gradient. A collective with several ranks (every rank calls it at
    the same point). SMT's warm-up calls it too, so its gradient sums are accumulated the same way.
    ``meter`` measures each micro-batch's forward on its own: activations are those of one micro-batch."""
    amp = run.policy.autocast()
    track = meter.track if meter is not None else contextlib.nullcontext

    def amp_loss(m: nn.Module, step_batch: StepBatch | Batch) -> torch.Tensor:
        micro = [step_batch] if isinstance(step_batch, dict) else list(step_batch)
        if len(micro) == 1 and run.world == 1:
            with track(), amp():
                return loss_fn(m, micro[0])  # one batch, one process: the plain mean, bit for bit as before
        items = [loss_items(b) for b in micro]
        (total,) = distributed.sum_scalars([float(sum(items))])
        done = torch.zeros((), device=micro[0]["input_ids"].device)
        last = torch.zeros((), device=done.device, requires_grad=True)  # nothing to learn from: no gradient
        for i, (b, n) in enumerate(zip(micro, items, strict=True)):
            if n == 0 or total == 0:
                continue
            with track(), amp():
                part = loss_fn(m, b) * (n / total)
            if i == len(micro) - 1:
                last = part
            else:
                part.backward()  # frees this micro-batch's activations before the next forward
                done = done + part.detach().float()
        return last + done

    return amp_loss


# ---- phase 3: the method, fresh (SMT runs its selection warm-up here) or rebuilt from a checkpoint -------
@dataclass
class Prepared:
    model: nn.Module
    start_step: int
    blocks: dict[str, Any] | None
    resumed: bool
    best: dict[str, Any] | None = None  # the checkpoint's evaluation-choice state (smt_core.best.Keeper)


def prepare_or_resume(spec: TrainSpec, run: Run, base: Base, enc: TrainData) -> Prepared:
    sites = find_sites(base.model, spec.targets)
    base.model.train()
    if spec.resume and checkpoint.exists(run.out):
        state, saved_adapter = checkpoint.load_meta(run.out)
        model = run.method.load(base.model, sites, saved_adapter, state["method_info"])
        step = int(state["step"])
        run.cb.fire("on_log", message=f"resumed from the checkpoint at step {step}", level="info")
        return Prepared(model, step, state.get("blocks"), True, state.get("best"))
    run.cb.fire("on_phase", phase=run.method.prepare_phase)
    ctx = PrepareContext(model=base.model, sites=sites, budget=base.budget, base_params=base.base_params,
                         device=run.device, callbacks=run.cb,
                         batches=lambda: enc.plan.iterate_micro(enc.train.examples, enc.pad, run.device,
                                                                spec.batch_size, rank=run.rank, world=run.world),
                         loss_fn=amp_loss_fn(run), steps_per_epoch=enc.plan.steps_per_epoch,
                         head_parameters=base.head, total_steps=enc.total_steps)
    if run.parent is not None:
        model = run.method.prepare_from(ctx, run.parent.tensors, run.parent.manifest.get("method_info") or {})
        run.cb.fire("on_log", level="info", message="continuing from the parent adapter "
                    f"{run.parent.sha256[:12]} (job {run.parent.job or 'unknown'}): fresh optimizer and schedule")
    else:
        model = run.method.prepare(ctx)
    blocks = run.method.blocks_report()
    if blocks is not None:
        run.cb.fire("on_selection", **blocks)
    return Prepared(model, 0, blocks, False)


# ---- phase 4: the optimizer over the method's parameters and the head ------------------------------------
@dataclass
class Optim:
    optimizer: torch.optim.Optimizer
    train_params: list[nn.Parameter]  # the method's, then the head's: the order checkpoints keep
    lr: float
    head_lr: float | None


def build_optimizer(spec: TrainSpec, method: Method, model: nn.Module, base: Base) -> Optim:
    params = method.trainable_parameters(model)
    for p in params:
        p.requires_grad_(True)
    head = base.head
    head_ids = {id(p) for p in head}
    params = [p for p in params if id(p) not in head_ids]
    train_params = params + head
    distributed.broadcast_params(train_params)  # replicas start from rank 0's values
    # lower on larger models (and for SMT on larger budgets)
    lr = spec.learning_rate or method.learning_rate_for(base.base_params, base.budget,
                                                        classification=base.task == "classification")
    # a random new head needs a higher rate than the pretrained weights' small corrections
    head_lr = spec.head_learning_rate or max(lr, HEAD_LEARNING_RATE)
    groups = [g for g in ({"params": params, "lr": lr, "base_lr": lr},
                          {"params": head, "lr": head_lr, "base_lr": head_lr}) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=spec.weight_decay)  # decay acts on ΔW itself
    return Optim(opt, train_params, lr, head_lr if head else None)


# ---- phase 5: the loop -----------------------------------------------------------------------------------
@dataclass
class Progress:
    run_eval: Callable[[int], dict[str, Any]]
    steps: int = 0  # optimizer steps done (fewer than total_steps when the run stopped early)
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    memory: dict[str, int] = field(default_factory=dict)
    grads: int = 0  # the gradients' peak bytes
    last_eval: tuple[int, dict[str, Any]] | None = None  # (step, scores) of the latest evaluation
    stopped_early: bool = False


def training_loop(spec: TrainSpec, run: Run, base: Base, enc: TrainData, state: Prepared, opt: Optim,
                  report: dict[str, Any], keeper: Keeper) -> Progress:
    cb, model, method, optimizer = run.cb, state.model, run.method, opt.optimizer
    amp = run.policy.autocast()
    batches = enc.plan.iterate_micro(enc.train.examples, enc.pad, run.device, spec.batch_size,
                                     start=state.start_step, rank=run.rank, world=run.world)

    def save_checkpoint(done: int) -> None:
        best = run.out / BEST  # the best so far travels with the checkpoint: a resumed run keeps choosing
        files = {BEST: best} if keeper.step is not None and best.is_file() else None
        path = checkpoint.save(run.out, done, opt.train_params, optimizer, method.adapter_tensors(model),
                               {"method_info": method.adapter_info(), "blocks": state.blocks,
                                "best": keeper.state()}, files)
        cb.fire("on_checkpoint", step=done, path=str(path))

    def run_eval(done: int) -> dict[str, Any]:
        with amp():
            scores = evaluate(model, base.tok, enc.eval, enc.fmt, spec.batch_size,
                              spec.max_seq_len, run.device, run.solo_cb.check_stop)  # rank 0 alone
        cb.fire("on_eval", step=done, **scores)
        progress.last_eval = (done, scores)
        keeper.observe(done, scores)  # a new best writes adapter-best.safetensors
        return scores

    progress = Progress(run_eval, steps=state.start_step)
    take_step = step_runner(spec, run, enc, state, opt, report, progress)
    for step in range(state.start_step, enc.total_steps):
        try:
            cb.check_stop()
        except Cancelled as exc:
            if exc.checkpoint and step > state.start_step and run.main:  # handed back: keep every finished step
                save_checkpoint(step)
            raise
        take_step(step, next(batches))
        done = progress.steps = step + 1
        if spec.eval_every and done % spec.eval_every == 0 and done < enc.total_steps and enc.eval.examples:
            if evaluate_and_decide(run, keeper, run_eval, done):
                cb.fire("on_log", level="info", message=f"stopped early at step {done}: {keeper.since} "
                        f"evaluations without a better {keeper.metric} than step {keeper.step}'s")
                progress.stopped_early = True
                break
        if run.main and spec.checkpoint_every and done % spec.checkpoint_every == 0 and done < enc.total_steps:
            save_checkpoint(done)
    return progress


def evaluate_and_decide(run: Run, keeper: Keeper, run_eval: Callable[[int], dict[str, Any]], done: int) -> bool:
    """Evaluate (rank 0 alone) and say whether to stop early; with early stopping on, every rank learns rank 0's
    decision (a collective), so all stop at the same step."""
    stop = False
    if run.main:
        try:
            run_eval(done)
        except Cancelled:
            pass  # the stop stands: the next step's check stops every rank together (and keeps this step)
        stop = keeper.should_stop
    if keeper.patience is not None:
        stop = bool(distributed.broadcast_json(stop))
    return stop


def step_runner(spec: TrainSpec, run: Run, enc: TrainData, state: Prepared, opt: Optim, report: dict[str, Any],
                progress: Progress) -> Callable[[int, StepBatch], None]:
    """One optimizer step over its micro-batches (accumulated in :func:`amp_loss_fn`), recorded in
    ``progress`` and reported by ``on_step_end``."""
    cb, model, optimizer = run.cb, state.model, opt.optimizer
    meter = memory.ActivationMeter(model)
    amp_loss = amp_loss_fn(run, meter)

    def take_step(step: int, micro: StepBatch) -> None:
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, group["base_lr"], spec.lr_warmup_steps, enc.total_steps)
        loss = amp_loss(model, micro)  # backpropagates all micro-batches but the last
        loss.backward()
        distributed.sync_gradients(opt.train_params)  # the sum of the ranks' weighted gradients
        progress.grads = max(progress.grads, memory.grad_bytes(opt.train_params))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = sum(int(b["attention_mask"].sum()) for b in micro)
        step_loss, n_tok = distributed.sum_scalars([loss.item(), tokens])
        progress.tokens += int(n_tok)
        progress.losses.append(step_loss)
        dt = time.time() - t0
        progress.memory = memory.snapshot(model, opt.train_params, optimizer, meter.max, run.device,
                                          gradients=progress.grads)
        if report.get("selection_bytes"):  # SMT's warm-up: gradient sums, freed before training
            progress.memory["selection"] = int(report["selection_bytes"])
        cb.fire("on_step_end", step=step + 1, total_steps=enc.total_steps, train_loss=step_loss,
                learning_rate=optimizer.param_groups[0]["lr"], tokens_per_second=int(n_tok) / max(dt, 1e-9),
                trained_tokens=progress.tokens, seconds=dt, memory=progress.memory)

    return take_step


# ---- phase 6: the artifact's manifest --------------------------------------------------------------------
def run_manifest(spec: TrainSpec, run: Run, data: Data, base: Base, enc: TrainData, opt: Optim,
                 report: dict[str, Any], trained: dict[str, torch.Tensor], metrics: dict[str, Any]) -> dict[str, Any]:
    model = base.model
    return manifest.build(
        libraries=library_versions(), method=spec.method, method_options=run.method.config.to_dict(),
        method_info=run.method.adapter_info(), targets=list(spec.targets), budget=spec.budget,
        budget_params=base.budget, report=report,
        base_model={"id": base.ref.id, "path": base.ref.path if base.ref.local else None,
                    "sha256": weights_sha256(base.ref),
                    "architecture": (model.config.architectures or [type(model).__name__])[0],
                    "model_type": model.config.model_type, "base_params": base.base_params},
        task=base.task,
        data=manifest.DataFacts(data.fmt, spec.train_data, len(data.rows), spec.eval_data, len(data.eval_rows)),
        seed=spec.seed,
        hyperparameters={"learning_rate": opt.lr, "head_learning_rate": opt.head_lr, "schedule": "linear",
                         "lr_warmup_steps": spec.lr_warmup_steps, "steps": enc.total_steps, "epochs": spec.epochs,
                         "batch_size": spec.batch_size, "max_seq_len": spec.max_seq_len,
                         "weight_decay": spec.weight_decay, "num_devices": spec.num_devices,
                         "gradient_checkpointing": spec.gradient_checkpointing, "precision": run.policy.name,
                         "gradient_accumulation_steps": spec.gradient_accumulation_steps,
                         "eval_every": spec.eval_every, "metric_for_best": spec.metric_for_best,
                         "early_stopping_patience": spec.early_stopping_patience},
        label_names=data.label_names, head_tensors=[k for k in trained if k.startswith(HEAD_PREFIX)],
        metrics=metrics, init_from=run.parent.lineage() if run.parent is not None else None)
