"""Model loading never runs pickle or a repository's own code: .bin-only folders are refused by name, and a
config that asks for custom code (auto_map) fails to load without importing it."""

from __future__ import annotations

import json

import pytest

from smt_core.models import ModelRef, load_model, load_tokenizer, model_config, resolve_model


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt"])
def test_bin_only_folder_is_refused(tmp_path, weights):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / weights).write_bytes(b"\x80\x02}q\x00.")  # a pickle header: must never be opened
    with pytest.raises(ValueError, match=r"no \.safetensors or \.gguf weights \(pickled \.bin weights are refused\)"):
        resolve_model(str(tmp_path))


def test_folder_with_safetensors_and_bin_loads_only_the_safetensors(tiny_llama_dir, tmp_path):
    """A .bin beside the safetensors is ignored: loading it would run pickle (and fail on this junk)."""
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "pytorch_model.bin").write_bytes(b"junk that torch.load would choke on")
    model, _ = load_model(resolve_model(str(folder)), "causal_lm")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_loaders_never_trust_remote_code(tmp_path):
    marker = tmp_path / "code-ran"
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "evilnet", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel",
                     "AutoTokenizer": ["evil.EvilTokenizer", None]}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]},
                                                                "tokenizer_class": "EvilTokenizer"}))
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (tmp_path / "model.safetensors").write_bytes(b"")
    ref = resolve_model(str(tmp_path))
    assert ref == ModelRef(str(tmp_path), str(tmp_path.resolve()), True)
    for load in (model_config, load_tokenizer, lambda r: load_model(r, "causal_lm")):
        with pytest.raises(ValueError):
            load(ref)
    assert not marker.exists(), "the repository's own code was imported"
