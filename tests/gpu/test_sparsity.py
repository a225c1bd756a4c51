"""What the sparse methods promise about ΔW, checked on the artifact a device trained: SMT changes the base
only inside its chosen blocks (within the budget); SNELL keeps ≈ (1 − s) of every ΔW's entries."""

from __future__ import annotations

import pytest
import torch

from smt_core.adapters import open_adapter
from smt_core.artifacts import load_adapter
from tests.gpu import helpers

pytestmark = helpers.needs_device


def block_mask(site, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """(out, in) bool: True inside the site's chosen blocks (rows offset by their part's row0)."""
    mask = torch.zeros(site.out_features, site.in_features, dtype=torch.bool)
    for part in site.parts:
        for r, c, h, w in tensors.get(f"{site.name}.{part.target}.blocks", torch.zeros(0, 4)).tolist():
            mask[part.row0 + int(r):part.row0 + int(r + h), int(c):int(c + w)] = True
    return mask


@pytest.mark.parametrize(("method", "arch"), helpers.cases(["smt"]))
def test_smt_merge_changes_the_base_only_inside_the_chosen_blocks(device, method, arch, trained):
    result, out = trained(device, method, arch)
    base, _, sites, meth, tensors, manifest = open_adapter(out)  # the base with any trained head copied in
    before = {k: v.clone() for k, v in base.state_dict().items()}
    base.to(device)  # merge where the run trained, with the artifact's tensors moved there too
    meth.merge(base, sites, {k: v.to(device) for k, v in tensors.items()}, manifest["method_info"])
    after = {k: v.cpu() for k, v in base.state_dict().items()}

    chosen = sum(int(block_mask(s, tensors).sum()) for s in sites)
    assert chosen == result.metrics["trainable_params"] <= manifest["budget_params"]
    site_keys = {f"{s.name}.weight" for s in sites}
    for k in before:
        if k not in site_keys:
            assert torch.equal(after[k], before[k]), f"{k} is not a target and must not change"
    changed = 0
    for s in sites:
        diff = after[f"{s.name}.weight"] - before[f"{s.name}.weight"]
        diff = diff.t() if s.transposed else diff  # (out, in)
        outside = (diff != 0) & ~block_mask(s, tensors)
        assert not outside.any(), f"{s.name}: {int(outside.sum())} entries changed outside the chosen blocks"
        changed += int((diff != 0).sum())
    assert changed > 0, "the merge must change the chosen blocks"


@pytest.mark.parametrize(("method", "arch"), helpers.cases(["snell"]))
def test_snell_keeps_about_one_minus_s_of_each_delta(device, method, arch, trained):
    result, out = trained(device, method, arch)
    tensors, manifest = load_adapter(out)
    info = manifest["method_info"]
    s = info["sparsity"]
    total_keep = 0
    for name, module in info["modules"].items():
        for part in module["parts"]:
            entries = part["rows"] * module["in"]
            keep = part["n_keep"]
            assert abs(keep - (1 - s) * entries) < 1, f"{name}.{part['target']}: n_keep {keep} of {entries}"
            nnz = int(tensors[f"{name}.{part['target']}.snell_values"].count_nonzero())
            assert abs(nnz - keep) <= max(1, keep // 100), f"{name}.{part['target']}: {nnz} nonzeros, {keep} kept"
            total_keep += keep
    assert abs(result.metrics["delta_nonzeros"] - total_keep) <= max(1, total_keep // 100)

    # recomputed from the factors on the device: the same share survives the competition there
    base, _, sites, meth, adapter, manifest = open_adapter(out)
    model = meth.load(base.to(device), sites, adapter, info)
    for layer in meth.layers(model):
        for part in layer.parts:
            nnz = int(layer.materialise(part).count_nonzero())
            keep = layer.keep(part)
            assert abs(nnz - keep) <= max(1, keep // 100), f"{layer.site_name}.{part.target} on {device}: {nnz}"
