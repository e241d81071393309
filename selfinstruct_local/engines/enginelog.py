"""An engine's own output goes to the run's engine.log, not to the user's terminal.

vLLM writes in three ways: through Python logging (logger "vllm", to stdout by default), through
`warnings` and bare prints at import, and from its engine-core processes, which write to the
stdout and stderr they inherited, tracebacks at shutdown included. So while the engine is
imported, created and shut down, file descriptors 1 and 2 of this process point at engine.log
(the processes it starts then keep writing there for their whole life), and afterwards the
"vllm" logger of this process writes to engine.log too. sigen's own messages are written
outside those windows and reach the terminal as before.

When engine start fails, the error names the last error line in the log and the log's path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ENGINE_LOG = "engine.log"
_TAIL_BYTES = 1 << 20  # enough for any start-up's last traceback
# vLLM's prefix on a logged line: "(EngineCore pid=12) ERROR 12-01 10:00:00 [core.py:700] ".
_VLLM_PREFIX = re.compile(r"^\(.*?pid=\d+\) [A-Z]+ \S+ \S+ \[[^\]]*\] ")
# The last line of a traceback: "RuntimeError: ...", "torch.OutOfMemoryError: ...".
_EXCEPTION = re.compile(r"^[\w.]*(?:Error|Exception)\b:? ")
_LOGGED_ERROR = re.compile(r"\b(?:ERROR|CRITICAL)\b")
_REFERRAL = re.compile(r"root cause|stack trace", re.IGNORECASE)
_MAX_CHARS = 300


def log_size(path: Path | None) -> int:
    """Where this start's output begins in the log (it is appended to across resumes)."""
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


@contextlib.contextmanager
def output_to(path: Path | None) -> Iterator[None]:
    """File descriptors 1 and 2 point at `path` (appended) inside the block, then back."""
    if path is None:
        yield
        return
    for stream in (sys.stdout, sys.stderr):  # what sigen wrote before goes where it belongs
        with contextlib.suppress(Exception):
            stream.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved: dict[int, int] = {}
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):  # a closed descriptor stays closed
                saved[fd] = os.dup(fd)
                os.dup2(target, fd)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):  # buffered text written meanwhile: to the log
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(target)


def logger_to(name: str, path: Path | None) -> None:
    """The named logger of this process writes to `path` only, in the format it had."""
    if path is None:
        return
    logger = logging.getLogger(name)
    formatter = next((h.formatter for h in logger.handlers if h.formatter), None)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(formatter or logging.Formatter(
        "%(levelname)s %(asctime)s [%(name)s] %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


def last_error_line(path: Path | None, start: int = 0) -> str | None:
    """The last error line written to `path` since byte `start`, shortened; None if none."""
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(max(start, log_size(path) - _TAIL_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = text.splitlines()
    # The exception that ended a traceback says most. vLLM re-raises a failure of its engine
    # processes as "... see the stack trace above for the root cause": the last exception that
    # does not send the reader elsewhere is the cause. Else the last line logged as an error.
    exceptions = [line for line in (_VLLM_PREFIX.sub("", raw).strip() for raw in lines)
                  if _EXCEPTION.match(line)]
    causes = [line for line in exceptions if not _REFERRAL.search(line)]
    found = causes[-1:] or exceptions[:1] or [
        line.strip() for line in lines if _LOGGED_ERROR.search(line)][-1:]
    if not found:
        return None
    return found[0] if len(found[0]) <= _MAX_CHARS else found[0][:_MAX_CHARS - 3] + "..."


def start_failure(what: str, path: Path | None, start: int, fallback: str) -> str:
    """"<what> failed to start: <last error line>; full log: <path>"."""
    cause = last_error_line(path, start) or fallback
    return f"{what} failed to start: {cause}" + (f"; full log: {path}" if path else "")
