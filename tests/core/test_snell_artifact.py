"""SNELL's compact artifact (bitmask + fp32 values + sha256, ``smt_core.methods.snell.artifact``): exact,
smaller than the old int32 indices + values, verified on load — and adapters in the old format still load,
merge, serve and export to the same weights."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from smt_core import TrainSpec, run
from smt_core.adapters import load_adapted, open_adapter
from smt_core.artifacts import ADAPTER, MANIFEST_KEY, load_adapter
from smt_core.merge import merge_adapter
from smt_core.methods.snell import artifact
from smt_core.methods.snell.kernel import n_keep
from tests import factories


def sparse(rows: int, cols: int, keep: int, seed: int = 0) -> torch.Tensor:
    """A ΔWˢ-like matrix: ``keep`` nonzeros, −0.0 elsewhere in places (ΔW ⊙ a zero gate leaves them)."""
    gen = torch.Generator().manual_seed(seed)
    dense = torch.randn(rows, cols, generator=gen)
    order = torch.randperm(rows * cols, generator=gen)
    flat = dense.view(-1)
    flat[order[keep:]] = flat[order[keep:]] * 0.0  # signed zeros: −0.0 where the entry was negative
    return dense


@pytest.mark.parametrize(("rows", "cols", "keep", "layout"), [(40, 24, 96, "mask"), (37, 29, 107, "mask"),
                                                              (64, 64, 40, "indices"), (8, 8, 0, "indices")])
def test_encode_decodes_exactly_in_the_smaller_layout(rows, cols, keep, layout):
    delta = sparse(rows, cols, keep)
    stored = artifact.encode(delta)
    assert layout in stored and ({"mask", "indices"} - {layout}).isdisjoint(stored)
    assert stored["values"].dtype == torch.float32 and stored["values"].numel() == keep
    assert stored["delta_sha256"].dtype == torch.uint8 and stored["delta_sha256"].shape == (32,)
    decoded = artifact.dense({f"k.{n}": t for n, t in stored.items()}, "k.", rows, cols)
    assert torch.equal(decoded, delta)  # −0.0 == +0.0: the same matrix
    idx, values = artifact.entries({f"k.{n}": t for n, t in stored.items()}, "k.", rows, cols)
    assert torch.equal(idx, delta.nonzero().t()) and torch.equal(values, delta[idx[0], idx[1]])
    if layout == "mask":
        assert stored["mask"].numel() == math.ceil(rows * cols / 8)


def test_a_corrupt_value_or_mask_is_refused_on_decode():
    stored = {f"k.{n}": t for n, t in artifact.encode(sparse(40, 24, 96)).items()}
    bad = dict(stored, **{"k.values": stored["k.values"].clone()})
    bad["k.values"][3] += 1e-6
    with pytest.raises(ValueError, match="sha256"):
        artifact.dense(bad, "k.", 40, 24)
    flipped = dict(stored, **{"k.mask": stored["k.mask"].clone()})
    flipped["k.mask"][0] ^= 0x80
    with pytest.raises(ValueError):
        artifact.dense(flipped, "k.", 40, 24)


def to_old_format(tensors: dict[str, torch.Tensor], manifest: dict) -> dict[str, torch.Tensor]:
    """The tensors as the engine wrote them before the mask: int32 ``indices`` [2, nnz] + ``values``."""
    old = {k: v for k, v in tensors.items() if not k.endswith(("snell_mask", "snell_delta_sha256"))}
    for name, module in manifest["method_info"]["modules"].items():
        for part in module["parts"]:
            key = f"{name}.{part['target']}.snell_"
            dense = artifact.dense(tensors, key, part["rows"], module["in"])
            idx = dense.nonzero().t()
            old[key + "indices"] = idx.to(torch.int32).contiguous()
            old[key + "values"] = dense[idx[0], idx[1]].contiguous()
    return old


def delta_bytes(tensors: dict[str, torch.Tensor], manifest: dict) -> int:
    return sum(artifact.stored_bytes(tensors, f"{name}.{part['target']}.snell_")
               for name, module in manifest["method_info"]["modules"].items() for part in module["parts"])


@pytest.fixture(scope="module")
def adapters(tiny_llama_dir, tmp_path_factory):
    """A trained SNELL adapter in the new format, and the same adapter rewritten in the old one."""
    tmp = tmp_path_factory.mktemp("snell-artifact")
    data = factories.write_jsonl(tmp / "d.jsonl", factories.completion_rows(16))
    run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method="snell", budget=3000, steps=2,
                  batch_size=4, max_seq_len=32, learning_rate=1e-2, out_dir=str(tmp / "new")))
    shutil.copytree(tmp / "new", tmp / "old")
    tensors, manifest = load_adapter(tmp / "new")
    with safe_open(str(tmp / "new" / ADAPTER), framework="pt") as fh:
        meta = fh.metadata()
    save_file(to_old_format(tensors, manifest), str(tmp / "old" / ADAPTER), metadata={MANIFEST_KEY: meta[MANIFEST_KEY]})
    return tmp / "new", tmp / "old"


def test_old_format_adapter_loads_merges_and_serves_to_the_same_weights(adapters, tmp_path):
    from transformers import AutoModelForCausalLM

    new, old = adapters
    old_tensors, _ = load_adapter(old)
    assert any(k.endswith("snell_indices") for k in old_tensors)
    assert not any(k.endswith(("snell_mask", "snell_delta_sha256")) for k in old_tensors)
    merged = [AutoModelForCausalLM.from_pretrained(merge_adapter(d, tmp_path / d.name)).state_dict()
              for d in (new, old)]
    assert merged[0].keys() == merged[1].keys()
    assert all(torch.equal(merged[0][k], merged[1][k]) for k in merged[0])  # fp32 values: exactly
    deltas = []
    for d in (new, old):
        base, _, sites, method, tensors, manifest = open_adapter(d)
        deltas.append(method.sparse_deltas(base, sites, tensors, manifest["method_info"]))
    assert deltas[0].keys() == deltas[1].keys()
    assert all(torch.equal(deltas[0][n][0], deltas[1][n][0]) and torch.equal(deltas[0][n][1], deltas[1][n][1])
               for n in deltas[0])
    probe = {"input_ids": torch.tensor([[5, 17, 99, 230]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        logits = [load_adapted(d)[0](**probe).logits for d in (new, old)]
    assert torch.equal(logits[0], logits[1])


def test_compact_artifact_is_smaller_than_the_old_one(adapters):
    new, old = adapters
    (t_new, manifest), (t_old, _) = load_adapter(new), load_adapter(old)
    b_new, b_old = delta_bytes(t_new, manifest), delta_bytes(t_old, manifest)
    nnz = sum(t.numel() for k, t in t_old.items() if k.endswith("snell_values"))
    entries = sum(p["rows"] * m["in"] for m in manifest["method_info"]["modules"].values() for p in m["parts"])
    parts = sum(len(m["parts"]) for m in manifest["method_info"]["modules"].values())
    assert b_old == 12 * nnz
    assert b_new == 4 * nnz + entries // 8 + 32 * parts  # the tiny matrices are whole bytes of mask
    assert b_new < b_old
    print(f"tiny llama ΔWˢ: {nnz} kept of {entries}; old {b_old} bytes, new {b_new} bytes "
          f"({b_old / b_new:.2f}×); files {(old / ADAPTER).stat().st_size} → {(new / ADAPTER).stat().st_size}")


def test_smollm2_135m_sizes_at_one_percent_from_the_shapes():
    """SmolLM2-135M (30 layers, hidden 576, 3 KV heads of 64), targets q, k, v, s = 0.9 — the arithmetic the
    README quotes: 1.2 bytes per entry before, 0.525 now."""
    shapes = [(576, 576), (192, 576), (192, 576)] * 30
    keep = [n_keep(r, c, 0.9) for r, c in shapes]
    old = sum(12 * k for k in keep)
    new = sum(4 * k + math.ceil(r * c / 8) + 32 for k, (r, c) in zip(keep, shapes, strict=True))
    assert sum(keep) == 1_658_940  # the README benchmark's delta_nonzeros
    assert (old, new) == (19_907_280, 8_712_240)  # 2.28× smaller; the factors (1,290,240 fp32) come on top
