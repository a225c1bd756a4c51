"""How the native adapter stores SNELL's materialised ΔWˢ, and how every reader decodes it.

Per targeted logical matrix (rows × cols, key prefix ``<module>.<target>.snell_``):

- ``mask``: uint8 [ceil(rows·cols / 8)], the kept entries as bits in row-major order, the first entry in a
  byte's most significant bit (``numpy.packbits``), **or** ``indices``: int32 [2, nnz] (row, col) — whichever
  is smaller for this matrix (the mask costs 1/8 byte per entry, the indices 8 bytes per kept entry: the mask
  wins while more than 1 entry in 64 is kept, i.e. at every sparsity below 0.984; 0.9 is the default);
- ``values``: fp32 [nnz], the kept entries in row-major order;
- ``delta_sha256``: uint8 [32], sha256 of the dense ΔWˢ (rows × cols, fp32, little-endian, row-major, +0.0
  where nothing is kept); a load recomputes it from the decoded matrix and refuses a mismatch.

Why this and not the factors + coefficients + threshold (which are smaller still): ΔWˢ recomputed on another
device or library version can differ in the last bits and flip entries tied at the threshold (the competition
ranks |ΔW|; ``load`` already warns when that happens), so a merge from the factors would not be exactly the
model that was trained and served. Stored values keep merge, serving and the SHiRA export exact on every
device. Why fp32 and not bf16 values: bf16 would round every ΔWˢ entry (8 bits of mantissa) — a merge that
is no longer exact, for 2 bytes of the ~4.5 saved per kept entry. Adapters written before (``indices`` +
``values``, no checksum) decode through the same path, unverified.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

INDEX_BYTES = 8  # an int32 (row, col) pair per kept entry


def encode(delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """The stored tensors (suffixes ``mask`` or ``indices``, ``values``, ``delta_sha256``) of one ΔWˢ."""
    dense = delta.detach().to(torch.float32).cpu().contiguous()
    keep = dense != 0
    values = dense[keep]  # row-major, as nonzero() orders them
    canonical = torch.where(keep, dense, torch.zeros((), dtype=torch.float32))  # no −0.0 left behind
    out: dict[str, torch.Tensor] = {}
    if mask_bytes(dense.numel()) < INDEX_BYTES * values.numel():
        out["mask"] = torch.from_numpy(np.packbits(keep.reshape(-1).numpy()))
    else:
        out["indices"] = keep.nonzero().t().to(torch.int32).contiguous()
    out["values"] = values.contiguous()
    out["delta_sha256"] = digest(canonical)
    return out


def mask_bytes(entries: int) -> int:
    """Bytes of the packed bitmask of a matrix of ``entries`` entries."""
    return (entries + 7) // 8


def digest(dense: torch.Tensor) -> torch.Tensor:
    """sha256 of a dense fp32 matrix's bytes (little-endian, row-major) as a uint8 [32] tensor."""
    data = dense.detach().to(torch.float32).cpu().contiguous().numpy().astype("<f4", copy=False)
    return torch.frombuffer(bytearray(hashlib.sha256(data.tobytes()).digest()), dtype=torch.uint8).clone()


def _kept(tensors: dict[str, torch.Tensor], key: str, rows: int, cols: int) -> torch.Tensor | None:
    """The stored bitmask as a bool (rows, cols) matrix, or None in the indices layout."""
    if key + "mask" not in tensors:
        return None
    bits = np.unpackbits(tensors[key + "mask"].numpy(), count=rows * cols)
    return torch.from_numpy(bits).view(rows, cols).bool()


def _check_count(key: str, positions: int, values: torch.Tensor) -> None:
    if positions != values.numel():
        raise ValueError(f"snell: {key[:-1]} stores {positions} kept positions but {values.numel()} values")


def entries(tensors: dict[str, torch.Tensor], key: str, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices int64 [2, nnz] in the part's (rows, cols), values) of one stored ΔWˢ, either layout."""
    values = tensors[key + "values"]
    kept = _kept(tensors, key, rows, cols)
    # row-major either way: nonzero() orders as the values were taken; the indices layout was written so
    idx = kept.nonzero().t() if kept is not None else tensors[key + "indices"].to(torch.int64)
    _check_count(key, idx.shape[1], values)
    return idx, values


def dense(tensors: dict[str, torch.Tensor], key: str, rows: int, cols: int) -> torch.Tensor:
    """The stored ΔWˢ of one part as a dense fp32 (rows, cols) matrix, checked against its sha256 if it has
    one (a corrupt or mis-decoded file must not be merged or served silently)."""
    values = tensors[key + "values"].to(torch.float32)
    out = torch.zeros(rows, cols, dtype=torch.float32)
    kept = _kept(tensors, key, rows, cols)
    if kept is not None:  # a masked assignment fills in row-major order: no index tensors at all
        _check_count(key, int(kept.sum()), values)
        out[kept] = values
    else:
        idx = tensors[key + "indices"].to(torch.int64)
        _check_count(key, idx.shape[1], values)
        out[idx[0], idx[1]] = values
    expected = tensors.get(key + "delta_sha256")
    if expected is not None and not torch.equal(digest(out), expected.to(torch.uint8)):
        raise ValueError(f"snell: {key[:-1]}: the decoded ΔW does not match its stored sha256 (corrupt adapter)")
    return out


def stored_bytes(tensors: dict[str, torch.Tensor], key: str) -> int:
    """Bytes the stored ΔWˢ of one part takes (mask or indices, values, checksum), factors excluded."""
    return sum(tensors[key + s].numel() * tensors[key + s].element_size()
               for s in ("mask", "indices", "values", "delta_sha256") if key + s in tensors)
