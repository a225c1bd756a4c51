"""Progress reporting without dependencies: the engine fires events, the caller (CLI, worker) listens.

Modelled on minGPT's ``add_callback``: the engine never imports the worker, the worker subscribes.
Events and their payloads (plain dicts of JSON-serialisable values):

- ``on_phase``      {"phase": "loading|selection|training|evaluating|saving"}
- ``on_step_end``   {"step", "total_steps", "train_loss", "learning_rate", "tokens_per_second",
                     "trained_tokens", "seconds", "memory"}
- ``on_eval``       {"step", "eval_loss", "eval_accuracy"}
- ``on_log``        {"message", "level"}
- ``on_checkpoint`` {"step", "path"}   (a folder that holds everything needed to resume)
- ``on_selection``  {"block_size", "modules": [...]}   (SMT's chosen blocks, the /blocks shape)
- ``on_info``       {"trainable_params", "total_params", "total_steps", ...} once the method is prepared

``should_stop`` handlers are polled every training step and eval batch; any True cancels the run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

EVENTS = ("on_phase", "on_step_end", "on_eval", "on_log", "on_checkpoint", "on_selection", "on_info")


class Cancelled(Exception):
    """Raised inside the engine when a ``should_stop`` handler asked the run to stop.

    ``checkpoint`` is True when a checkpoint request also said yes: the trainer then saved a checkpoint at
    the step boundary before raising, so a run handed to another worker loses nothing.
    """

    def __init__(self, message: str = "run cancelled", checkpoint: bool = False) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class Callbacks:
    """A registry of listeners keyed by event name."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Callable[[dict[str, Any]], None]]] = defaultdict(list)
        self._stoppers: list[Callable[[], bool]] = []
        self._checkpoint_requests: list[Callable[[], bool]] = []

    def add(self, event: str, fn: Callable[[dict[str, Any]], None]) -> Callbacks:
        if event not in EVENTS:
            raise ValueError(f"unknown callback event {event!r}; expected one of {', '.join(EVENTS)}")
        self._handlers[event].append(fn)
        return self

    def add_stop_check(self, fn: Callable[[], bool]) -> Callbacks:
        self._stoppers.append(fn)
        return self

    def add_checkpoint_request(self, fn: Callable[[], bool]) -> Callbacks:
        """Asked when a stop check fires: True makes the trainer checkpoint before it stops (hand-back)."""
        self._checkpoint_requests.append(fn)
        return self

    def fire(self, event: str, **payload: Any) -> None:
        for fn in self._handlers.get(event, ()):
            fn(payload)

    def check_stop(self) -> None:
        """Raise :class:`Cancelled` if any stop check says so (called every step and eval batch)."""
        if any(fn() for fn in self._stoppers):
            raise Cancelled("run cancelled", checkpoint=any(fn() for fn in self._checkpoint_requests))
