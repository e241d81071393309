"""A run directory: append-only JSONL files plus a manifest that is replaced atomically.

Rows are appended and fsynced as soon as they are decided, or, in group-commit mode (the
generation loop), collected and written with one fsync per file at most GROUP_COMMIT_SECONDS
later, files in COMMIT_ORDER: an instruction's pending row reaches the disk before its instance
rows, and those before its final row, so a crash loses at most the rows of the last half second,
which the run then redoes as work in flight. A process killed mid-write leaves a torn last line;
reading detects it, reports it and truncates the file back to its last complete line. A bad line
anywhere else is an error.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from selfinstruct_local.errors import SigenError

INSTRUCTIONS = "machine_instructions.jsonl"
INSTANCES = "instances.jsonl"
REJECTED = "rejected.jsonl"
PENDING = "pending.jsonl"  # accepted by the filters, waiting for classification and instances
MANIFEST = "manifest.json"
DATA = "data.json"
COMMIT_ORDER = (PENDING, REJECTED, INSTANCES, INSTRUCTIONS)
GROUP_COMMIT_SECONDS = 0.5


# Why a write fails when the machine, not sigen, is at fault: said in words a user can act on.
STORAGE_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
    errno.EFBIG: "the file size limit is reached (ulimit -f)",
    errno.EIO: "the disk reported an I/O error",
}


class StorageError(SigenError):
    """A run file could not be written. Everything written before is intact (appends are
    line-sized, other files are replaced atomically); the same command resumes the run."""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRORS:
            raise
        raise StorageError(
            f"cannot write {path}: {STORAGE_ERRORS[exc.errno]} ({exc.strerror}). Nothing "
            "written before is lost: free space or fix the folder, then run the same command "
            "again to resume.") from None


class RunStore:
    def __init__(self, root: Path, group_commit: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self.group_commit = group_commit
        self.clock = clock
        self._buffer: dict[str, list[str]] = {}
        self._oldest: float | None = None  # when the oldest buffered row was appended
        with writing(self.root):
            self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def append(self, name: str, rows: Iterable[dict]) -> None:
        lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
        if not lines:
            return
        if not self.group_commit:
            self._write(name, "".join(lines))
            return
        self._buffer.setdefault(name, []).extend(lines)
        if self._oldest is None:
            self._oldest = self.clock()
        self.flush_if_due()

    def create(self, names: Iterable[str]) -> None:
        """Make each file exist (empty when new): a run directory has all its files, also a
        run that had nothing to write in one of them (a run that rejected nothing)."""
        for name in names:
            with writing(self.path(name)), open(self.path(name), "a", encoding="utf-8"):
                pass

    def flush_if_due(self) -> None:
        if self._oldest is not None and self.clock() - self._oldest >= GROUP_COMMIT_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write every buffered row: one write and one fsync per file, in COMMIT_ORDER."""
        names = [n for n in COMMIT_ORDER if n in self._buffer]
        names += [n for n in self._buffer if n not in COMMIT_ORDER]
        for name in names:
            self._write(name, "".join(self._buffer.pop(name)))
        self._oldest = None

    def _write(self, name: str, lines: str) -> None:
        with writing(self.path(name)), open(self.path(name), "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def read(
        self, name: str, warn: Callable[[str], None] = print, repair: bool = True
    ) -> list[dict]:
        """All rows of a JSONL file; a torn last line is dropped.

        With `repair` (the writer's view, on resume) the torn line is also cut from the file;
        without it (readers such as `sigen stats`, maybe while a run is writing) nothing changes.
        """
        path = self.path(name)
        if not path.exists():
            return []
        data = path.read_bytes()
        rows: list[dict] = []
        good_end = 0
        for lineno, raw in enumerate(data.splitlines(keepends=True), start=1):
            complete = raw.endswith(b"\n")
            try:
                row = json.loads(raw)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError:
                if good_end + len(raw) == len(data):  # the last line: a write cut short
                    warn(f"{path}:{lineno}: dropping a torn last line left by an interrupted write")
                    if repair:
                        self._truncate(path, good_end)
                    return rows
                raise SigenError(
                    f"{path}:{lineno}: not a JSON object; the run directory is damaged. "
                    "Remove or fix that line, or start a new run with another --output."
                ) from None
            if not complete and repair:  # valid JSON, no newline: complete it for later appends
                with writing(path), open(path, "ab") as handle:
                    handle.write(b"\n")
            rows.append(row)
            good_end += len(raw)
        return rows

    @staticmethod
    def _truncate(path: Path, size: int) -> None:
        with writing(path), open(path, "r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())

    def write_json(self, name: str, obj: object) -> None:
        """Replace a JSON file atomically: write a temporary sibling, fsync, rename."""
        self._replace(name, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")

    def replace_rows(self, name: str, rows: Iterable[dict]) -> None:
        """Rewrite a JSONL file atomically (used only to repair a run on resume)."""
        self._replace(name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def _replace(self, name: str, text: str) -> None:
        write_atomic(self.path(name), text.encode("utf-8"))

    def read_json(self, name: str) -> dict | None:
        path = self.path(name)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise SigenError(f"{path}: not valid JSON; the run directory is damaged") from None


def write_atomic(target: Path, data: bytes) -> None:
    """Replace `target` with `data`: write a temporary sibling, fsync, rename.

    A reader sees the old file or the new one, never half of one, whatever kills the process.
    """
    with writing(target):
        _write_atomic(target, data)


def _write_atomic(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a run's files are ordinary files
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
