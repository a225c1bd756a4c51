"""smt_core.serving on one linear layer: a sparse delta written in place equals the dense sum, coalescing
blocks changes nothing but the patch count, and switching off restores the exact bits (fp32 and bf16)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smt_core.serving import Host, InPlaceDelta, Patch, coalesce, entry_patches
from smt_core.targets import Part, Site


class OneLayer(Host):
    def __init__(self, dtype: torch.dtype) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(96, 64, bias=False).to(dtype)
        self.site = Site("layer", self.model, 0, False, 64, 96, (Part("q", 0, 64),))

    def sites(self, targets):
        return [self.site]

    def fresh_model(self):
        raise NotImplementedError


def _blocks(seed: int, b: int = 16) -> tuple[list[Patch], torch.Tensor]:
    """Random blocks on a b×b grid of the (64, 96) weight (many adjacent), and their dense sum."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.zeros(64, 96)
    patches = []
    for r in range(0, 64, b):
        for c in range(0, 96, b):
            if torch.rand(1, generator=g) < 0.6:
                values = torch.randn(b, b, generator=g) * 0.01
                dense[r:r + b, c:c + b] = values
                patches.append(Patch(values, r, c))
    return patches, dense


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blocks_written_in_place_equal_the_dense_sum_and_come_off_exactly(dtype):
    host = OneLayer(dtype)
    original = host.model.weight.detach().clone()
    patches, dense = _blocks(1)
    merged = coalesce([Patch(p.values.clone(), p.row0, p.col0) for p in patches])
    assert len(merged) < len(patches)
    assert sum(p.values.numel() for p in merged) == sum(p.values.numel() for p in patches)
    delta = InPlaceDelta({"layer": merged}, ["q"])
    delta.attach(host)
    for _ in range(3):
        delta.activate(host)
        want = (original.float() + dense).to(dtype)
        assert torch.equal(host.model.weight.detach(), want)
        delta.deactivate(host)
        assert torch.equal(host.model.weight.detach(), original)


def test_entries_written_in_place_equal_the_dense_sum_and_come_off_exactly():
    host = OneLayer(torch.float32)
    original = host.model.weight.detach().clone()
    idx = torch.stack([torch.randint(0, 64, (300,)), torch.randint(0, 96, (300,))]).unique(dim=1)
    values = torch.randn(idx.shape[1]) * 0.01
    delta = InPlaceDelta(entry_patches({"layer": (idx, values)}), ["q"])
    delta.attach(host)
    delta.activate(host)
    dense = torch.zeros(64, 96)
    dense[idx[0], idx[1]] = values
    assert torch.equal(host.model.weight.detach(), original + dense)
    delta.deactivate(host)
    assert torch.equal(host.model.weight.detach(), original)


def test_a_block_outside_the_weight_is_refused():
    host = OneLayer(torch.float32)
    with pytest.raises(ValueError, match="outside"):
        InPlaceDelta({"layer": [Patch(torch.zeros(16, 16), 56, 0)]}, ["q"]).attach(host)
