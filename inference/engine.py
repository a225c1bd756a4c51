"""The engine: one thread owns every loaded model and runs all generation and prediction on them.

How concurrent requests are scheduled:
- Requests for the same model and adapter that arrive together (within ``BATCH_WINDOW`` of each other, or
  while a step runs) form one :class:`~inference.batch.Batch`, decoded in lock step.
- Batches take turns, one decode step each, round robin. Batches on different adapters of one base share its
  weights: before a batch's step its adapter is switched on (:meth:`ModelHost.use`) — a swap per decode step
  when two adapters' streams interleave, none while one adapter's batches run in a row. An SMT swap writes
  and restores ~1% of the weights (milliseconds; ``bench/inference.py`` measures it).
- A slow client never blocks anyone: pieces go into the request's own queue and the engine never waits for a
  reader. A client that goes away cancels its generation, which leaves its batch at the next step.
- Reading a model or an adapter from disk runs on a loader thread, so streams already running keep going.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from inference.batch import Batch
from inference.decode import Sequence
from inference.hosts import AdapterFile, HostCache, HostKey, ModelHost, host_key, load_host, read_adapter
from inference.requests import Generation, InferenceError, Sampling, Target
from smt_core.data import chat_ids

log = logging.getLogger("sparsetune.inference")
BATCH_WINDOW = 0.005  # seconds an idle engine waits for more requests to batch with the first
PREDICT_BATCH = 32


@dataclass(eq=False)
class _Request:
    target: Target
    gen: Generation | None = None  # a generation, or …
    sampling: Sampling | None = None
    prompt: str | None = None
    messages: list[dict] | None = None
    texts: list[str] | None = None  # … a prediction, answered through ``future``
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    def fail(self, error: InferenceError) -> None:
        if self.gen is not None:
            self.gen.finish(None, error)
        elif not self.future.done():
            self.future.set_exception(error)


@dataclass
class _Loaded:
    """What the loader read for one target: the adapter file and, if its base was not loaded, the host."""

    target: Target
    key: HostKey | None = None
    file: AdapterFile | None = None
    host: ModelHost | None = None
    error: InferenceError | None = None


class Engine:
    """``generate`` returns a :class:`Generation` at once (an unknown model or an encoder base ends its stream
    with an InferenceError, so a server reads the first piece before it answers); ``predict`` blocks (call it
    from a worker thread); ``held_models()`` the base models loaded; ``load()`` requests in hand."""

    def __init__(self, memory_bytes: int | None = None, device: str | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cache = HostCache(memory_bytes)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: list[_Request] = []  # for a model or adapter being read
        self._loading: set[tuple[str, str | None]] = set()
        self._batches: list[Batch] = []
        self._adapter_keys: dict[str, HostKey] = {}  # adapter → its host, once read
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="inference-loader")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._max_len: dict[str, int] = {}  # a classification adapter's training max_seq_len

    # ---- the caller's side -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(30)
        self._loader.shutdown(wait=False, cancel_futures=True)

    def generate(self, target: Target, sampling: Sampling, *, prompt: str | None = None,
                 messages: list[dict] | None = None) -> Generation:
        if (prompt is None) == (messages is None):
            raise InferenceError(422, "give a prompt or messages", "messages")
        gen = Generation()
        self._submit(_Request(target, gen=gen, sampling=sampling, prompt=prompt, messages=messages))
        return gen

    def predict(self, target: Target, texts: list[str]) -> list[dict]:
        """``[{"label": "sport", "probabilities": {"sport": 0.93, …}}]`` for a classification job's adapter."""
        if not target.adapter:
            raise InferenceError(422, "prediction needs a classification job's model", "model")
        request = _Request(target, texts=texts)
        self._submit(request)
        return request.future.result()

    def held_models(self) -> list[str]:
        return self.cache.names()

    def load(self) -> int:
        """Requests in hand: waiting for a model, or still decoding (read from another thread: a snapshot). A
        finished sequence does not count, though its batch stays listed until the engine's next pass: its client
        already has the answer."""
        return len(self._waiting) + sum(1 for b in list(self._batches) for s in list(b.seqs) if not s.done)

    def _submit(self, request: _Request) -> None:
        if self._stop.is_set():
            raise InferenceError(503, "the inference process is stopping")
        self._inbox.put(request)

    # ---- the engine thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._drain(block=not self._batches)
                self._batches = [b for b in self._batches if not b.done]
                for batch in list(self._batches):
                    self._step(batch)
            except Exception:  # noqa: BLE001 - one bad request must not stop the engine
                log.exception("inference engine step failed")
        for batch in self._batches:
            batch.fail(InferenceError(503, "the inference process stopped"))
        for request in self._waiting:
            request.fail(InferenceError(503, "the inference process stopped"))

    def _drain(self, block: bool) -> None:
        """Take what arrived: new requests (batched with those that come within BATCH_WINDOW) and loads."""
        arrived: list[_Request] = []
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            while True:
                if isinstance(item, _Loaded):
                    self._loaded(item)
                elif isinstance(item, _Request):
                    arrived.append(item)
                item = self._inbox.get(timeout=BATCH_WINDOW) if block else self._inbox.get_nowait()
        except queue.Empty:
            pass
        self._waiting.extend(arrived)
        self._admit()

    def _admit(self) -> None:
        """Start every waiting request whose model and adapter are ready; send the rest to the loader."""
        ready: dict[tuple[HostKey, str | None], list[_Request]] = {}
        still: list[_Request] = []
        for request in self._waiting:
            key = self._ready_key(request.target)
            if key is None:
                still.append(request)
                self._load(request.target)
            else:
                ready.setdefault((key, request.target.adapter), []).append(request)
        self._waiting = still
        for (key, adapter), requests in ready.items():
            host = self.cache.get(key)
            assert host is not None
            for request in [r for r in requests if r.texts is not None]:
                self._predict(host, adapter, request)
            generations = [r for r in requests if r.gen is not None]
            if generations:
                self._start_batch(host, adapter, generations)

    def _ready_key(self, target: Target) -> HostKey | None:
        key = self._adapter_keys.get(target.adapter) if target.adapter else host_key(target.base)
        if key is None:
            return None
        host = self.cache.get(key)
        if host is None or (target.adapter and target.adapter not in host.adapters):
            return None
        return key

    def _load(self, target: Target) -> None:
        ident = (target.base, target.adapter)
        if ident in self._loading:
            return
        self._loading.add(ident)
        known = set(self.cache.hosts)
        self._loader.submit(self._read, target, known)

    def _read(self, target: Target, known: set[HostKey]) -> None:
        """Loader thread: read the adapter file and, if its base is not loaded yet, the base."""
        loaded = _Loaded(target)
        try:
            loaded.file = read_adapter(target) if target.adapter else None
            loaded.key = loaded.file.host_key if loaded.file else host_key(target.base)
            if loaded.key not in known:
                loaded.host = load_host(loaded.key, self.device)
        except InferenceError as exc:
            loaded.error = exc
        except Exception as exc:  # noqa: BLE001 - reported to the requests that asked
            log.exception("loading %s failed", target)
            loaded.error = InferenceError(500, f"loading {target.adapter or target.base} failed: {exc}", "model")
        self._inbox.put(loaded)

    def _loaded(self, loaded: _Loaded) -> None:
        """Engine thread: register what the loader read, then attach the adapter."""
        target = loaded.target
        self._loading.discard((target.base, target.adapter))
        try:
            if loaded.error is not None:
                raise loaded.error
            assert loaded.key is not None
            if loaded.host is not None and self.cache.get(loaded.key) is None:
                self.cache.fit(loaded.host.nbytes)
                self.cache.add(loaded.host)
            host = self.cache.get(loaded.key)
            if host is None:  # evicted meanwhile: read it again
                return
            if loaded.file is not None and loaded.file.name not in host.adapters:
                self.cache.fit(sum(t.nbytes for t in loaded.file.tensors.values()))
                host.attach(loaded.file)
                hyper = loaded.file.manifest.get("hyperparameters") or {}
                self._max_len[loaded.file.name] = int(hyper.get("max_seq_len") or 512)
                self._adapter_keys[loaded.file.name] = loaded.key
        except InferenceError as error:
            for request in [r for r in self._waiting if (r.target.base, r.target.adapter) ==
                            (target.base, target.adapter)]:
                request.fail(error)
                self._waiting.remove(request)

    # ---- running -------------------------------------------------------------------------------------
    def _start_batch(self, host: ModelHost, adapter: str | None, requests: list[_Request]) -> None:
        seqs = []
        for request in requests:
            try:
                seqs.append(self._sequence(host, request))
            except InferenceError as error:
                request.fail(error)
        if not seqs:
            return
        batch = Batch(host, adapter, seqs)
        host.busy += 1
        try:
            batch.prefill(host.use(adapter))
        except Exception as exc:  # noqa: BLE001 - fail this batch, keep serving
            log.exception("prefill failed")
            batch.fail(InferenceError(500, f"generation failed: {exc}"))
        finally:
            host.busy -= 1
        self._batches.append(batch)

    def _step(self, batch: Batch) -> None:
        batch.host.busy += 1
        try:
            batch.step(batch.host.use(batch.adapter))
        except Exception as exc:  # noqa: BLE001
            log.exception("decode step failed")
            batch.fail(InferenceError(500, f"generation failed: {exc}"))
        finally:
            batch.host.busy -= 1

    def _sequence(self, host: ModelHost, request: _Request) -> Sequence:
        """Check the request against its model and encode its prompt."""
        assert request.gen is not None and request.sampling is not None
        if not host.is_causal:
            raise InferenceError(422, f"{request.target.adapter or request.target.base} is a classification model: "
                                 "it predicts labels; use POST /v1/jobs/{id}/predict", "model")
        tok = host.tokenizer
        if request.messages is not None:
            if not getattr(tok, "chat_template", None):
                raise InferenceError(422, f"model {request.target.base} has no chat template; use "
                                     "/v1/completions", "messages")
            ids = chat_ids(tok, request.messages, True)
        else:
            ids = tok(request.prompt or "", add_special_tokens=True)["input_ids"] or [tok.bos_token_id or 0]
        limit = getattr(host.model.config, "max_position_embeddings", None)
        if limit and len(ids) + request.sampling.max_tokens > limit:
            raise InferenceError(422, f"the prompt ({len(ids)} tokens) plus max_tokens "
                                 f"({request.sampling.max_tokens}) exceed the model's {limit} positions", "max_tokens")
        return Sequence(request.gen, list(ids), request.sampling, tok, _stop_ids(host))

    def _predict(self, host: ModelHost, adapter: str | None, request: _Request) -> None:
        if host.task != "classification":
            request.fail(InferenceError(422, f"{adapter} is not a classification job: use /v1/chat/completions "
                                        "or /v1/completions", "model"))
            return
        host.busy += 1
        try:
            max_len = self._max_len.get(adapter or "", 512)
            request.future.set_result(_classify(host, host.use(adapter), request.texts or [], max_len))
        except Exception as exc:  # noqa: BLE001
            log.exception("prediction failed")
            request.fail(InferenceError(500, f"prediction failed: {exc}"))
        finally:
            host.busy -= 1


def _stop_ids(host: ModelHost) -> set[int]:
    """End-of-text tokens: the tokenizer's and the generation config's (chat models end a turn with theirs)."""
    ids: set[int] = set()
    for value in (host.tokenizer.eos_token_id, getattr(getattr(host.model, "generation_config", None),
                                                       "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids


@torch.inference_mode()
def _classify(host: ModelHost, module: Any, texts: list[str], max_len: int) -> list[dict]:
    """Label probabilities, each text encoded as training encoded it (cut to the job's max_seq_len keeping
    the closing special token, padded on the right), so a job's evaluation rows score as they did."""
    labels = [host.model.config.id2label[i] for i in range(host.model.config.num_labels)]
    pad = host.tokenizer.pad_token_id or 0
    out: list[dict] = []
    for i in range(0, len(texts), PREDICT_BATCH):
        rows = [host.tokenizer(t, truncation=False)["input_ids"] for t in texts[i:i + PREDICT_BATCH]]
        rows = [ids[:max_len - 1] + ids[-1:] if len(ids) > max_len else ids for ids in rows]
        width = max(len(ids) for ids in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=host.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=host.device)
        probs = torch.softmax(module(input_ids=ids, attention_mask=mask).logits.float(), dim=-1).cpu()
        for row in probs:
            best = int(row.argmax())
            out.append({"label": labels[best], "probabilities": {n: float(p) for n, p in zip(labels, row, strict=True)}})
    return out
