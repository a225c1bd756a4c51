"""Serving on a bf16 base, as the inference process does on a GPU: a trained adapter written into (or put
beside) the shared bf16 weights computes what the fp32 merged model computes, to bf16 precision, and the
base's weights are bit-identical once the adapter is switched off."""

from __future__ import annotations

import pytest
import torch

from inference.hosts import host_key, load_host, read_adapter
from inference.requests import Target
from smt_core.merge import merge_adapter
from tests.gpu import helpers
from tests.gpu.test_merge import BF16_REL, logits, probe, rel

pytestmark = helpers.needs_device
CASES = helpers.cases(archs=["llama", "gpt2"])  # the causal LMs: the ones chat and completions serve


@pytest.mark.parametrize(("method", "arch"), CASES)
def test_served_logits_on_a_bf16_base_match_the_merged_model(device, method, arch, trained, model_dir, data_file,
                                                             tmp_path):
    from transformers import AutoModelForCausalLM

    _, out = trained(device, method, arch)
    base = str(model_dir(arch))
    host = load_host(host_key(base), torch.device(device), torch.bfloat16)
    host.attach(read_adapter(Target(base, "job_x", out)))
    batch = probe(host.tokenizer, data_file(arch))
    before = {k: v.clone() for k, v in host.model.state_dict().items()}

    served = logits(host.use("job_x"), batch, device)
    merged = AutoModelForCausalLM.from_pretrained(merge_adapter(out, tmp_path / "merged")).eval()
    assert rel(served, logits(merged, batch, "cpu")) < BF16_REL

    host.use(None)
    after = host.model.state_dict()
    changed = [k for k, v in before.items() if "lora_" not in k and k in after and not torch.equal(after[k], v)]
    assert not changed, f"the bf16 base changed in {changed[:3]}"
