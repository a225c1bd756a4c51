"""One sequence's decoding: sampling its next token, and turning its tokens into text pieces that never split a
character or run past a stop string."""

from __future__ import annotations

import torch

from inference.requests import Generation, Sampling


def sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token from one row of logits (vocab,): greedy at temperature 0, else top-p sampling with the
    request's own generator (so a seed gives the same text whether streamed or not, alone or batched)."""
    if sampling.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < sampling.top_p  # the smallest set whose mass reaches top_p
        keep[0] = True
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


class Sequence:
    """A request inside a batch: its prompt, its tokens so far and the text already sent."""

    def __init__(self, gen: Generation, prompt_ids: list[int], sampling: Sampling, tokenizer,
                 stop_ids: set[int]) -> None:
        self.gen, self.prompt_ids, self.sampling, self.tok = gen, prompt_ids, sampling, tokenizer
        self.stop_ids = stop_ids
        self.ids: list[int] = []
        self.sent = ""  # text handed to the caller
        self.done = False
        self.generator: torch.Generator | None = None
        if sampling.seed is not None:
            self.generator = torch.Generator().manual_seed(sampling.seed)
        gen.prompt_tokens = len(prompt_ids)

    def push(self, token: int) -> None:
        """Take the sampled token; end on an end-of-text token, a stop string or the length limit."""
        if token in self.stop_ids:
            self._end("stop")
            return
        self.ids.append(token)
        self.gen.completion_tokens = len(self.ids)
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        cut = self._stop_at(text)
        if cut is not None:
            self._send(text[:cut])
            self._end("stop")
            return
        if len(self.ids) >= self.sampling.max_tokens:
            self._send(text)
            self._end("length")
            return
        self._send(self._safe_prefix(text))

    def cancel(self) -> None:
        self._end("cancelled")

    def fail(self, error) -> None:
        if not self.done:
            self.done = True
            self.gen.finish(None, error)

    def _stop_at(self, text: str) -> int | None:
        """Where the first stop string starts in the text after what was sent (it may straddle the boundary)."""
        hits = [text.find(s, max(0, len(self.sent) - len(s) + 1)) for s in self.sampling.stop if s]
        hits = [h for h in hits if h >= 0]
        return min(hits) if hits else None

    def _safe_prefix(self, text: str) -> str:
        """What may be sent now: not a half-decoded character (U+FFFD at the end) and not a tail that could be
        the start of a stop string."""
        end = len(text)
        while end > len(self.sent) and text[end - 1] == "\ufffd":
            end -= 1
        for s in self.sampling.stop:
            for k in range(min(len(s) - 1, end - len(self.sent)), 0, -1):
                if text[end - k:end] == s[:k]:
                    end -= k
                    break
        return text[:end]

    def _send(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.gen.put(text[len(self.sent):])
            self.sent = text

    def _end(self, reason: str) -> None:
        if not self.done:
            self.done = True
            self.gen.finish(reason)
