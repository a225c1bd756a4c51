"""Data parallel (issue 8): two gloo processes on CPU against one process on the same global batch.

The single-process run is the reference: with the same seed and global batch, two ranks must select the same
SMT blocks and end with the same block deltas (and LoRA with the same adapter tensors) to float tolerance.
21 training rows in batches of 4 make every epoch end on a one-row batch, so one rank gets an empty shard
there; the causal-LM rows have different numbers of labelled tokens, so an unweighted per-rank mean would
not add up to the single-process loss.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smt_core import Callbacks, Cancelled, TrainSpec, run
from smt_core.artifacts import load_adapter
from smt_core.cli import main as cli_main
from tests import factories
from tests.helpers import free_port

ROWS, STEPS = 21, 8  # 6 steps an epoch: the run wraps into a second epoch
COMMON = {"budget": 3000, "steps": STEPS, "batch_size": 4, "max_seq_len": 32, "learning_rate": 1e-2,
          "checkpoint_every": 0, "holdout_fraction": 0.0, "max_eval_rows": 4}
SMT_OPTIONS = {"block_size": 16}  # selection_steps: one epoch (6 steps, the short last batch included)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dp-data")
    train = factories.write_jsonl(tmp / "train.jsonl", factories.completion_rows(ROWS))
    evals = factories.write_jsonl(tmp / "eval.jsonl", factories.completion_rows(4, seed=1))
    return str(train), str(evals)


@pytest.fixture(scope="module")
def single(tiny_llama_dir, data, tmp_path_factory):
    """The one-process reference runs, {method: (metrics, out_dir)}, each computed once for the module."""
    cache: dict = {}

    def get(method: str):
        if method not in cache:
            out = tmp_path_factory.mktemp(f"single-{method}")
            r = run(_spec(tiny_llama_dir, data, method, out))
            cache[method] = (r.metrics, out)
        return cache[method]

    return get


def _spec(model_dir, data, method, out, **kw) -> TrainSpec:
    opts = SMT_OPTIONS if method == "smt" else {}
    return TrainSpec(model=str(model_dir), train_data=data[0], eval_data=data[1], method=method,
                     method_options=opts, out_dir=str(out), **{**COMMON, **kw})


def _assert_same_adapter(a_dir, b_dir) -> dict[str, torch.Tensor]:
    a, a_manifest = load_adapter(a_dir)
    b, _ = load_adapter(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype in (torch.int32, torch.int64):
            assert torch.equal(a[k], b[k]), f"{k} differs"  # SMT block tables: the selection itself
        else:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=f"{k} differs")
    return a


def _cli_args(model_dir, data, out) -> list[str]:
    """``sparsetune train`` with the reference SMT spec on two devices."""
    return ["--json", "train", "--model", str(model_dir), "--data", data[0], "--eval", data[1],
            "--method", "smt", "--budget", "3000", "--steps", str(STEPS), "--batch-size", "4", "--max-seq-len", "32",
            "--learning-rate", "1e-2", "--checkpoint-every", "0", "--max-eval-rows", "4",
            "--method-option", "block_size=16", "--num-devices", "2", "--out", str(out)]


def test_smt_on_two_ranks_selects_and_trains_what_one_process_does(tiny_llama_dir, data, single, tmp_path,
                                                                   capsys):
    ref_metrics, ref_out = single("smt")
    out = tmp_path / "dp"
    assert cli_main(_cli_args(tiny_llama_dir, data, out)) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]

    tensors = _assert_same_adapter(ref_out, out)
    tables = [v for k, v in tensors.items() if k.endswith(".blocks")]
    assert tables and sum(int(t[:, 2].mul(t[:, 3]).sum()) for t in tables) == ref_metrics["trainable_params"]
    assert all(v.abs().max() > 0 for k, v in tensors.items() if k.endswith(".values")), "blocks must train"
    # the reported figures are the global batch's, not rank 0's share
    assert metrics["trained_tokens"] == ref_metrics["trained_tokens"]
    assert metrics["train_loss"] == pytest.approx(ref_metrics["train_loss"], rel=1e-5)
    assert metrics["eval_loss"] == pytest.approx(ref_metrics["eval_loss"], rel=1e-5)
    assert load_adapter(out)[1]["hyperparameters"]["num_devices"] == 2


def test_torchrun_runs_the_same_training(tiny_llama_dir, data, single, tmp_path):
    """Under torchrun every rank runs the CLI and joins the group torchrun made; rank 0 alone reports."""
    _, ref_out = single("smt")
    out = tmp_path / "tr"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "smt_core.cli", *_cli_args(tiny_llama_dir, data, out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1 and json.loads(reports[0])["metrics"]["steps"] == STEPS
    _assert_same_adapter(ref_out, out)


def test_lora_on_two_ranks_trains_what_one_process_does(tiny_llama_dir, data, single, tmp_path):
    ref_metrics, ref_out = single("lora")
    r = run(_spec(tiny_llama_dir, data, "lora", tmp_path / "dp", num_devices=2))
    tensors = _assert_same_adapter(ref_out, tmp_path / "dp")
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in tensors.items())
    assert r.metrics["train_loss"] == pytest.approx(ref_metrics["train_loss"], rel=1e-5)


def test_classification_head_and_row_weights_on_two_ranks_match_one_process(tmp_path_factory, tmp_path):
    """SMT on a BERT classifier: the new head trains alone first (its gradients are all-reduced too), and
    the loss averages over rows. Dropout off: each rank draws its own masks, so with dropout a two-rank run
    is equivalent in distribution only, not to float tolerance."""
    model = factories.build_tiny_model(tmp_path_factory.mktemp("bert-nodrop"), "bert")
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(cfg))
    train = factories.write_jsonl(tmp_path / "train.jsonl", factories.classification_rows(ROWS))
    kw = {**COMMON, "steps": 6, "method_options": {"block_size": 16, "head_steps": 3, "selection_steps": 6}}
    kw.pop("max_eval_rows")
    specs = [TrainSpec(model=str(model), train_data=str(train), method="smt", out_dir=str(tmp_path / f"o{n}"),
                       num_devices=n, **kw) for n in (1, 2)]
    one, two = run(specs[0]), run(specs[1])
    tensors = _assert_same_adapter(tmp_path / "o1", tmp_path / "o2")
    assert any(k.startswith("head.") for k in tensors)
    assert two.metrics["train_loss"] == pytest.approx(one.metrics["train_loss"], rel=1e-5)


def test_a_stop_reaches_every_rank_and_the_resumed_run_matches_one_process(tiny_llama_dir, data, single,
                                                                           tmp_path):
    """The stop is first seen in rank 0's solo evaluation after step 5 (rank 1 is already waiting in the
    next step's collective): it must stop both ranks there, with the checkpoint the hand-back asks for."""
    _, ref_out = single("smt")
    out = tmp_path / "dp"
    done, saved, warnings, evals = [], [], [], []
    cb = Callbacks().add("on_step_end", lambda p: done.append(p["step"])).add("on_checkpoint", saved.append)
    cb.add("on_eval", evals.append)
    cb.add("on_log", lambda p: warnings.append(p) if p["level"] == "warning" else None)
    cb.add_stop_check(lambda: len(done) >= 5).add_checkpoint_request(lambda: True)
    with pytest.raises(Cancelled) as exc:
        run(_spec(tiny_llama_dir, data, "smt", out, num_devices=2, eval_every=5), cb)
    assert exc.value.checkpoint and [s["step"] for s in saved] == [5]
    assert done == [1, 2, 3, 4, 5] and evals == [], "the stop interrupted the evaluation after step 5"
    assert not warnings, "rank 1 must stop by itself at the same step, not be killed"
    resumed: list[int] = []
    run(_spec(tiny_llama_dir, data, "smt", out, num_devices=2, resume=True),
        Callbacks().add("on_step_end", lambda p: resumed.append(p["step"])))
    assert resumed == list(range(6, STEPS + 1))
    _assert_same_adapter(ref_out, out)


def test_a_rank_that_dies_fails_the_run_naming_it(tiny_llama_dir, data, tmp_path):
    def kill_peers(p: dict) -> None:
        if p["step"] != 2:
            return
        me = os.getpid()
        for task in Path(f"/proc/{me}/task").iterdir():  # our own children only, and only the peer ranks
            for pid in (task / "children").read_text().split():
                if b"smt_core.launch" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(int(pid), signal.SIGKILL)

    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank 1 was killed \(signal 9\)"):
        run(_spec(tiny_llama_dir, data, "smt", tmp_path / "o", num_devices=2, steps=200),
            Callbacks().add("on_step_end", kill_peers))
    assert time.monotonic() - started < 60, "rank 0 must not wait out a collective timeout"


def _collectives(rank: int, port: int) -> None:
    """Runs in each of two spawned processes (torch.multiprocessing spawn; only ints cross)."""
    import torch.distributed as dist

    from smt_core import distributed

    store = dist.TCPStore("127.0.0.1", port, 2, is_master=rank == 0)
    distributed.init(rank, 2, store, "gloo")
    try:
        got = distributed.broadcast_json({"blocks": [[0, 1, 16, 16, 0.125]], "rank": rank})
        assert got == {"blocks": [[0, 1, 16, 16, 0.125]], "rank": 0}
        a, b = torch.full((3,), float(rank + 1)), torch.full((2, 2), rank + 1, dtype=torch.float64)
        distributed.all_reduce_([a, b], op="mean")
        assert torch.equal(a, torch.full((3,), 1.5)) and torch.equal(b, torch.full((2, 2), 1.5, dtype=torch.float64))
        distributed.check_replicas({"same": torch.ones(4)})  # identical: passes
        with pytest.raises(RuntimeError, match=r"replicas diverged: rank\(s\) \[1\]"):
            distributed.check_replicas({"same": torch.ones(4), "other": torch.tensor([float(rank)])})
    finally:
        distributed.teardown()


def test_collectives_carry_json_and_catch_diverged_replicas():
    import torch.multiprocessing as mp

    mp.spawn(_collectives, args=(free_port(),), nprocs=2, join=True)


def test_bad_device_counts_are_refused_with_the_field_named(tiny_llama_dir, data, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="num_devices"):
        _spec(tiny_llama_dir, data, "smt", tmp_path, num_devices=0)
    with pytest.raises(ValueError, match="batch_size: 6 must be divisible by num_devices"):
        _spec(tiny_llama_dir, data, "smt", tmp_path, num_devices=4, batch_size=6)
    from smt_core.launch import check_devices

    # no GPU here: pretend one is visible to check the refusal of more devices than GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"num_devices: 2 asked, but only 1 GPU"):
        check_devices(_spec(tiny_llama_dir, data, "smt", tmp_path, num_devices=2))
    assert check_devices(_spec(tiny_llama_dir, data, "smt", tmp_path, num_devices=2, device="cpu")) == "gloo"
