"""The GPU precision policy — bf16 frozen weights, a bf16 autocast, fp32 trainable tensors — run on the CPU
for every method and architecture, so a dtype mistake fails CI, which has no GPU and otherwise trains in fp32.

Each case trains a few steps under ``precision="bf16"`` and checks what a GPU job relies on: the loss is
finite and training lowers it, the trainable tensors and the artifact are fp32 while the frozen weights are
bf16, the run names its precision, and the artifact loads on an fp32 base (merged = adapted exactly) and on
a bf16 base under autocast (≈ merged, to bf16's resolution).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from smt_core import Callbacks, TrainSpec, precision, run
from smt_core.adapters import open_adapter
from smt_core.data import collate, encode
from smt_core.dataformats import read_jsonl
from tests import factories

METHODS = factories.METHODS
MODELS = factories.MODEL_DATA  # fixture name → data factory
BUDGET = 3000
STEPS = 4
OPTIONS = {"smt": {"selection_steps": 2, "block_size": 16, "head_steps": 2}}
RATES = {"full": 1e-3}  # else 1e-2: a few steps must move the model; full FT at 1e-2 overshoots
BF16_REL = 3e-2  # ‖bf16 logits − fp32 logits‖ / ‖fp32 logits‖: a few bf16 ulps (2⁻⁸) through two layers


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def _probe(tok, data_file) -> dict[str, torch.Tensor]:
    """The first training rows as one labelled batch: the loss training should have lowered."""
    fmt, rows, labels = read_jsonl(str(data_file))
    return collate(encode(rows[:8], fmt, tok, 32, labels).examples, tok.pad_token_id)


def _loss_and_logits(model, batch, amp=None) -> tuple[float, torch.Tensor]:
    with torch.no_grad(), (amp() if amp else torch.autocast("cpu", enabled=False)):
        out = model(**batch)
    return float(out.loss), out.logits.float()


def test_precision_resolves_from_spec_then_environment_then_auto(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(precision.ENV, raising=False)
    assert precision.resolve(None, cpu).name == "fp32"  # auto on a CPU
    monkeypatch.setenv(precision.ENV, "bf16")
    assert precision.resolve(None, cpu).name == "bf16"
    assert precision.resolve("fp32", cpu).name == "fp32"  # the spec wins over the environment
    monkeypatch.setenv(precision.ENV, "fp16")
    with pytest.raises(ValueError, match="SPARSETUNE_PRECISION"):
        precision.resolve(None, cpu)
    with pytest.raises(ValueError, match="precision"):
        TrainSpec(model="m", train_data="d", method="smt", out_dir="o", precision="half")


def test_a_gpu_without_bf16_falls_back_to_fp32_and_says_so(monkeypatch):
    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    monkeypatch.setattr(torch.version, "hip", None)
    policy = precision.resolve(None, torch.device("cuda"))
    assert policy.name == "fp32" and "V100" in (policy.warning or "")
    assert policy.frozen_dtype(trains_base_weights=False) == torch.float32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    ampere = precision.resolve(None, torch.device("cuda"))
    assert ampere.name == "bf16" and ampere.warning is None


@pytest.mark.parametrize("model_fixture", list(MODELS))
@pytest.mark.parametrize("method", METHODS)
def test_gpu_precision_policy_on_cpu(method, model_fixture, request, tmp_path):
    model_dir = request.getfixturevalue(model_fixture)
    data = factories.write_jsonl(tmp_path / "train.jsonl", MODELS[model_fixture](32))
    steps: list[dict] = []
    cb = Callbacks().add("on_step_end", steps.append)
    out = tmp_path / "out"
    result = run(TrainSpec(model=str(model_dir), train_data=str(data), method=method, budget=BUDGET, steps=STEPS,
                           batch_size=4, max_seq_len=32, learning_rate=RATES.get(method, 1e-2), method_options=OPTIONS.get(method, {}),
                           holdout_fraction=0.0, checkpoint_every=0, device="cpu", precision="bf16",
                           out_dir=str(out)), cb)
    m = result.metrics
    assert m["precision"] == "bf16"
    losses = [s["train_loss"] for s in steps]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses), losses

    mem = steps[-1]["memory"]  # bytes by storage: the dtypes training really held
    assert mem["trainable"] == 4 * (m["trainable_params"] + m["head_params"]), "trainable tensors must be fp32"
    if method != "full":  # full fine-tuning trains the base weights, kept fp32
        assert mem["weights"] <= 2 * m["total_params"] + 4096, "frozen weights must be bf16"

    base, tok, sites, meth, tensors, manifest = open_adapter(out)  # an fp32 base, as merge and inference use
    assert manifest["hyperparameters"]["precision"] == "bf16"
    bad = {k: v.dtype for k, v in tensors.items() if v.is_floating_point() and v.dtype != torch.float32}
    assert not bad, f"the artifact must hold fp32 values: {bad}"
    info = manifest["method_info"]
    probe = _probe(tok, data)
    copies = [copy.deepcopy(base) for _ in range(2)]  # (base + trained head): for merge, and for bf16
    base_loss, base_logits = _loss_and_logits(base, probe)
    adapted = meth.load(base, sites, tensors, info).eval()
    loss, logits = _loss_and_logits(adapted, probe)
    assert not torch.equal(logits, base_logits), "training must have changed the model"
    # a few steps lower a causal LM's loss on its own rows clearly; a classifier's head trained in both
    # models, so only the adapter's (small) share of the change is left to see there
    slack = 1e-3 if model_fixture == "tiny_bert_dir" else 0.0
    assert loss < base_loss + slack, f"training under bf16 must lower the loss on its data ({base_loss} → {loss})"

    merged = copies[0]
    type(meth).from_options(manifest["method_options"]).merge(merged, _sites(merged, manifest), tensors, info)
    _, merged_logits = _loss_and_logits(merged, probe)
    torch.testing.assert_close(merged_logits, logits, rtol=1e-4, atol=1e-4)

    half = copies[1].to(torch.bfloat16)  # the adapter on a bf16 base under autocast, as the job ran it
    half = type(meth).from_options(manifest["method_options"]).load(half, _sites(half, manifest), tensors, info)
    _, half_logits = _loss_and_logits(half.eval(), probe, precision.resolve("bf16", torch.device("cpu")).autocast())
    assert _rel(half_logits, merged_logits) < BF16_REL, "the bf16-policy model must match the merged one"


def _sites(model, manifest):
    from smt_core.targets import find_sites

    return find_sites(model, manifest["targets"])
