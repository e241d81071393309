"""Ctrl-C during `sigen run`: stop soon, never in the middle of a write.

A terminal's Ctrl-C goes to the whole process group, so vLLM's engine and worker processes get
it as well and shut down: an engine call in flight cannot finish then, and depending on where the
signal finds them it may not fail promptly either (we saw a run wait 5 minutes, vLLM's
execute-model timeout). So the first Ctrl-C abandons an engine call at once (nothing is written
during one; the instructions it was for are in pending.jsonl and are completed on resume), and
otherwise stops at the next check between steps. A second Ctrl-C raises KeyboardInterrupt
wherever the run is: appends are line-sized, and a torn last line is repaired on resume.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class RunInterrupted(Exception):
    """Raised at a safe point after the user asked the run to stop (Ctrl-C)."""


class ServerUnavailable(RunInterrupted):
    """No inference server answered for --server-timeout: the run stops as after a Ctrl-C
    (everything decided is on disk) and the same command resumes it once a server is back."""


class StopRequest:
    """Installs the SIGINT handler while entered; outside `with`, it only never requests."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.requested = False
        self.log = log
        self._abortable = False
        self._previous = None

    @contextmanager
    def abortable(self) -> Iterator[None]:
        """Code that a Ctrl-C may cut short at any point: an engine call, which writes nothing."""
        if self.requested:
            raise RunInterrupted
        self._abortable = True
        try:
            yield
        finally:
            self._abortable = False

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self._abortable:
            self.log("Stopping now: the engine call in flight is abandoned, nothing decided is "
                     "lost (press Ctrl-C again to stop at once) ...")
            raise RunInterrupted
        self.log("Stopping at the next safe point (press Ctrl-C again to stop at once) ...")

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
