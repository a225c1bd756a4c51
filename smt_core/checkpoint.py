"""Resumable training state as safetensors + JSON (no pickle): the adapter's tensors and structure, the
trainable parameters, AdamW's state, the step (which fixes the data position) and the RNG state.

Written into a temporary folder and renamed over ``checkpoint/``, so a kill mid-write leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

DIRNAME = "checkpoint"


def save(out_dir: Path, step: int, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer,
         adapter_tensors: dict[str, torch.Tensor], state: dict[str, Any], files: dict[str, Path] | None = None) -> Path:
    """``files``: other files of the run a resume needs as they were at this step (the best evaluation's
    adapter), copied into the folder under their names."""
    final = out_dir / DIRNAME
    tmp = out_dir / f".{DIRNAME}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {f"param.{i}": p.detach() for i, p in enumerate(params)}
    index = {id(p): i for i, p in enumerate(params)}
    for p, st in opt.state.items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{index[id(p)]}.{k}"] = v
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in adapter_tensors.items()}, str(tmp / "adapter.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, sort_keys=True))
    for name, path in (files or {}).items():
        shutil.copyfile(path, tmp / name)
    old = out_dir / f".{DIRNAME}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def exists(out_dir: Path) -> bool:
    return (out_dir / DIRNAME / "state.json").is_file()


def load_meta(out_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(state JSON, adapter tensors) — what is needed to rebuild the adapted model."""
    folder = out_dir / DIRNAME
    return json.loads((folder / "state.json").read_text()), load_file(str(folder / "adapter.safetensors"))


def restore(out_dir: Path, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer) -> None:
    """Copy saved parameter values, optimizer state and RNG state back in place."""
    tensors = load_file(str(out_dir / DIRNAME / "state.safetensors"))
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(tensors[f"param.{i}"].to(p.device, p.dtype))
    for i, p in enumerate(params):
        st = {k.split(".", 2)[2]: v.to(p.device) for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if st:
            if "step" in st:
                st["step"] = st["step"].cpu()  # AdamW keeps its step counter on the CPU
            opt.state[p] = st
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
