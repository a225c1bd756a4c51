"""A batch: requests for the same model and adapter that arrived together, decoded in lock step.

Prompts are left-padded so every row's next token sits in the last column; each row keeps its own positions
and its own sampler. A finished or cancelled row is dropped from the key-value cache at the next step, so the
batch shrinks instead of decoding padding for it.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from inference.decode import Sequence, sample


class Batch:
    def __init__(self, host, adapter: str | None, seqs: list[Sequence]) -> None:
        self.host, self.adapter, self.seqs = host, adapter, seqs
        self.cache = DynamicCache()
        self.mask: torch.Tensor | None = None  # (rows, positions so far)
        self.positions: torch.Tensor | None = None  # (rows,) position of each row's last token

    @property
    def done(self) -> bool:
        return all(s.done for s in self.seqs)

    @torch.inference_mode()
    def prefill(self, module: nn.Module) -> None:
        device, pad = self.host.device, self.host.tokenizer.pad_token_id or 0
        width = max(len(s.prompt_ids) for s in self.seqs)
        ids = torch.full((len(self.seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(self.seqs), width), dtype=torch.long)
        for i, s in enumerate(self.seqs):
            ids[i, width - len(s.prompt_ids):] = torch.tensor(s.prompt_ids)
            mask[i, width - len(s.prompt_ids):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (rows, width)
        out = module(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=self.cache,
                     use_cache=True)
        self.cache, self.mask, self.positions = out.past_key_values, mask, positions[:, -1]
        self._take(out.logits[:, -1, :])

    @torch.inference_mode()
    def step(self, module: nn.Module) -> None:
        """One token for every live row (after dropping the rows that ended)."""
        self._shrink()
        if not self.seqs:
            return
        device = self.host.device
        last = torch.tensor([s.ids[-1] for s in self.seqs], device=device).unsqueeze(1)  # (rows, 1)
        assert self.mask is not None and self.positions is not None
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.positions = self.positions + 1
        out = module(input_ids=last, attention_mask=self.mask, position_ids=self.positions.unsqueeze(1),
                     past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self._take(out.logits[:, -1, :])

    def _take(self, logits: torch.Tensor) -> None:  # (rows, vocab)
        for row, seq in zip(logits, self.seqs, strict=True):
            if seq.gen.cancelled:
                seq.cancel()
            if not seq.done:
                seq.push(sample(row, seq.sampling, seq.generator))

    def _shrink(self) -> None:
        for seq in self.seqs:
            if seq.gen.cancelled:
                seq.cancel()
        keep = [i for i, s in enumerate(self.seqs) if not s.done]
        if len(keep) == len(self.seqs):
            return
        self.seqs = [self.seqs[i] for i in keep]
        if keep:
            index = torch.tensor(keep, device=self.host.device)
            self.cache.batch_select_indices(index)
            assert self.mask is not None and self.positions is not None
            self.mask, self.positions = self.mask[index], self.positions[index]

    def fail(self, error) -> None:
        for seq in self.seqs:
            seq.fail(error)
