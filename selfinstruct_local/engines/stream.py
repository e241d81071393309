"""Requests in, completions out as they finish: what the generation loop talks to.

The loop keeps `capacity` requests submitted and collects whatever has finished, so follow-up
requests (instances for an instruction accepted a moment ago) go out while others still run.

- `BatchStream` serves any engine with a blocking `generate` (in-process vLLM, transformers):
  `collect` runs the queued requests as one batch of up to `capacity`. Batches mix stages, so
  a round is one engine call rather than three or four.
- An engine with `stream(capacity)` (the openai engine) returns its own: requests are sent the
  moment they are submitted and come back one by one, keeping every server's slots full.

`ordered` says whether completions come back in an order the run controls (then a run with the
same --seed builds the same prompts in the same order), rather than in the order servers finish.
"""

from __future__ import annotations

from typing import Protocol

from selfinstruct_local.engines.base import Completion, Engine, Request


class RequestStream(Protocol):
    capacity: int  # requests worth keeping submitted at once
    ordered: bool
    blocking: bool  # collect() may take a whole batch's time

    @property
    def in_flight(self) -> int: ...

    def submit(self, key: int, request: Request) -> None: ...

    def collect(self) -> list[tuple[int, Completion]]:
        """Some finished requests (at least one if any is in flight, unless a short wait for
        them ran out), as (key, completion)."""
        ...


class BatchStream:
    ordered = True
    blocking = True

    def __init__(self, engine: Engine, capacity: int) -> None:
        self.engine = engine
        self.capacity = max(1, capacity)
        self._queue: list[tuple[int, Request]] = []

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def submit(self, key: int, request: Request) -> None:
        self._queue.append((key, request))

    def collect(self) -> list[tuple[int, Completion]]:
        batch, self._queue = self._queue[: self.capacity], self._queue[self.capacity:]
        if not batch:
            return []
        completions = self.engine.generate([request for _, request in batch])
        return [(key, c) for (key, _), c in zip(batch, completions, strict=True)]


def open_stream(engine: Engine, capacity: int) -> RequestStream:
    """The engine's own stream when it has one, else batches through `generate`."""
    own = getattr(engine, "stream", None)
    return own(capacity) if own is not None else BatchStream(engine, capacity)

