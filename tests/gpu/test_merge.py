"""The artifact a device wrote: merged output equals adapted output on the device and on the CPU, the bf16
policy's view of it matches the merge, and the run kept its trainable tensors fp32."""

from __future__ import annotations

import copy

import pytest
import torch

from smt_core import precision
from smt_core.adapters import open_adapter
from smt_core.data import collate, encode
from smt_core.dataformats import read_jsonl
from smt_core.merge import merge_adapter
from tests.gpu import helpers

pytestmark = helpers.needs_device
CASES = helpers.cases()
BF16_REL = 3e-2  # ‖bf16-policy logits − fp32 logits‖ / ‖fp32 logits‖: a few bf16 ulps through two layers


def probe(tok, data) -> dict[str, torch.Tensor]:
    fmt, rows, labels = read_jsonl(str(data))
    return collate(encode(rows[:8], fmt, tok, 32, labels).examples, tok.pad_token_id)


def logits(model, batch, device: str, amp=None) -> torch.Tensor:
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.no_grad(), (amp() if amp else torch.autocast(device, enabled=False)):
        return model(**batch).logits.float().cpu()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize(("method", "arch"), CASES)
def test_run_records_its_precision_and_keeps_trainable_tensors_fp32(device, method, arch, trained):
    result, out = trained(device, method, arch)
    m = result.metrics
    assert m["precision"] == helpers.expected_precision(device)
    assert m["memory"]["trainable"] == 4 * (m["trainable_params"] + m["head_params"])
    if method != "full" and m["precision"] == "bf16":
        assert m["memory"]["weights"] <= 2 * m["total_params"] + 4096, "frozen weights must be bf16"


@pytest.mark.parametrize(("method", "arch"), CASES)
def test_merged_equals_adapted_on_the_device_and_on_the_cpu(device, method, arch, trained, data_file, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    _, out = trained(device, method, arch)
    base, tok, sites, meth, tensors, manifest = open_adapter(out)  # on the CPU, fp32: the artifact as saved
    info = manifest["method_info"]
    batch = probe(tok, data_file(arch))
    half_base = copy.deepcopy(base).to(device=device, dtype=torch.bfloat16)
    cpu_logits = logits(meth.load(copy.deepcopy(base), helpers.sites_of(base, manifest), tensors, info).eval(),
                        batch, "cpu")
    dev_logits = logits(meth.load(base.to(device), sites, tensors, info).eval(), batch, device)

    merged_dir = merge_adapter(out, tmp_path / "merged")  # the product's merge: on the CPU
    cls = AutoModelForSequenceClassification if arch == "bert" else AutoModelForCausalLM
    merged = cls.from_pretrained(merged_dir).eval()
    merged_cpu = logits(merged, batch, "cpu")
    torch.testing.assert_close(merged_cpu, cpu_logits, rtol=1e-4, atol=1e-4, msg="merged ≠ adapted on the CPU")
    torch.testing.assert_close(logits(merged.to(device), batch, device), dev_logits, rtol=1e-4, atol=1e-4,
                               msg=f"merged ≠ adapted on {device}")
    torch.testing.assert_close(dev_logits, cpu_logits, rtol=1e-3, atol=1e-3, msg=f"{device} ≠ CPU")

    # the adapter on a bf16 base under autocast, as the job ran it, against the fp32 merge
    half = type(meth).from_options(manifest["method_options"])
    half_model = half.load(half_base, helpers.sites_of(half_base, manifest), tensors, info).eval()
    amp = precision.resolve("bf16", torch.device(device)).autocast()
    assert rel(logits(half_model, batch, device, amp), merged_cpu) < BF16_REL
