"""Keeps CPython's cyclic garbage collector from stalling a serving process (the API, the inference server).

A collection stops the process for as long as it walks its objects, and every request in flight waits. Two
kinds of walk made the tail of bench/api_load.py's hostile mix (measured with ``gc.callbacks``, 2026-12-02):

- Full collections walked everything alive: about 130,000 objects from the imports alone (FastAPI, pydantic,
  SQLAlchemy and their caches), and up to 160 ms a walk under load. What exists once a process has started
  lives as long as the process, so it is moved out of the collector's sight (``gc.freeze``, after a collection
  so that nothing unreachable is frozen): full walks then cover only what was made since (the open streams).
- At the default thresholds (700, 10, 10) the young generations are collected hundreds of times a second under
  load, each time promoting whatever a request in flight holds; those promotions soon call for another full
  walk (six in 45 s). A young collection every 20,000 allocations instead promotes a small fraction of that
  (in-flight objects are mostly gone by then), and the middle generation is collected every second young
  collection so that it stays small too: no full walk in any measured window since, and young walks mostly
  of a few ms (the longest seen, 23 ms).
"""

from __future__ import annotations

import gc

YOUNG_EVERY = 20_000  # allocations (net of frees) between collections of the youngest generation
MIDDLE_EVERY = 2  # young collections per collection of the middle generation
FULL_EVERY = 10  # middle collections per full one (CPython also waits until a quarter of the heap is new)

_frozen = False


def tune_for_serving() -> int:
    """Freeze what exists now and set the thresholds above; the freeze once per process (a second app in the
    same process, as in tests, adds nothing the first did not). Returns how many objects are frozen."""
    global _frozen
    gc.set_threshold(YOUNG_EVERY, MIDDLE_EVERY, FULL_EVERY)
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True
    return gc.get_freeze_count()
