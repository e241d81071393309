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

    @classmethod
    def open(cls, root: Path, group_commit: bool = False) -> RunStore:
        """A store for writing, its folder created if needed (readers use the constructor,
        which creates nothing)."""
        root = Path(root)
        try:
            with writing(root):
                root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SigenError(f"cannot create the run directory {root}: {exc.strerror}. Pass an "
                             "--output in a folder you can write to.") from None
        return cls(root, group_commit)

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
        """All rows of a JSONL file. A last line without its newline that is not a JSON object
        is a write cut short (torn): it is skipped with a warning. Any other line that is not a
        JSON object is an error naming file:line, whatever its position.

        With `repair` (the writer's view, on resume) the file is also mended (see `repair`);
        without it (readers such as `sigen stats`, maybe while a run is writing) nothing changes.
        """
        path = self.path(name)
        if not path.exists():
            return []
        rows: list[dict] = []
        for lineno, raw in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
            row = _parse_row(raw)
            if row is None:
                if not raw.endswith(b"\n"):  # the last line, cut short by a kill
                    warn(f"{path}:{lineno}: dropping a torn last line left by an interrupted write")
                    break
                raise SigenError(
                    f"{path}:{lineno}: not a JSON object; the run directory is damaged. "
                    "Remove or fix that line, or start a new run with another --output.")
            rows.append(row)
        if repair:
            self.repair(name)
        return rows

    def repair(self, name: str) -> None:
        """Mend what a kill leaves at the end of a file being appended to: a torn last line
        (no newline, not a JSON object) is cut off; a complete last row without its newline
        gets one, so that later appends start on a line of their own."""
        path = self.path(name)
        if not path.exists():
            return
        data = path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        if _parse_row(data[start:]) is None:
            self._truncate(path, start)
        else:
            with writing(path), open(path, "ab") as handle:
                handle.write(b"\n")

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


def _parse_row(raw: bytes) -> dict | None:
    try:
        row = json.loads(raw)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


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


# -- the run directory as a target of `sigen run` --------------------------------------------
# Every file a run writes. A folder holding anything else was not written by sigen run.
RUN_FILES = frozenset({
    INSTRUCTIONS, INSTANCES, REJECTED, PENDING, MANIFEST, DATA, "scores.jsonl",
    "contamination.jsonl", "contamination.json", "engine.log", ".sigen.lock", "report.md",
})


def check_output_dir(root: Path) -> None:
    """Refuse, before anything is written, a --output that cannot be a run directory: a file,
    a path under a file, or a folder holding files that no sigen run wrote."""
    root = Path(root)
    for parent in (root, *root.parents):
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == root else f"is under {parent}, which is a file"
            raise SigenError(f"--output {root} {what}; a run directory is a folder. Pass a new "
                             "or empty folder.")
    if not root.is_dir():
        return
    try:
        names = {p.name for p in root.iterdir()}
    except OSError as exc:
        raise SigenError(f"cannot read the folder {root}: {exc.strerror}") from None
    foreign = sorted(n for n in names if n not in RUN_FILES and not _sigen_temporary(n))
    if MANIFEST not in names and names & {INSTRUCTIONS, INSTANCES, REJECTED, PENDING}:
        foreign = sorted(names & {INSTRUCTIONS, INSTANCES, REJECTED, PENDING}) + foreign
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise SigenError(f"--output {root} holds files that no sigen run wrote ({shown}); "
                         "sigen writes only into a new or empty folder or a run of its own. "
                         "Pass another --output.")


def _sigen_temporary(name: str) -> bool:
    """A temporary sibling of an atomic write (`.manifest.json.xxxx`) left by a kill."""
    return name.startswith(".") and any(name.startswith(f".{n}.") for n in RUN_FILES)


def read_previous_manifest(root: Path) -> dict | None:
    """The manifest of the run in `root` (None when there is none yet), checked enough to
    continue from: a JSON object whose config is an object and whose counts are numbers."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SigenError(f"{path}: not valid JSON ({exc}); the run directory is damaged. "
                         "Restore the file, or start a new run with another --output.") from None
    problem = manifest_problem(manifest)
    if problem:
        raise SigenError(f"{path}: {problem}; the run directory is damaged. Restore the file, "
                         "or start a new run with another --output.")
    return manifest


# Manifest sections and the JSON type each must have when present.
_MANIFEST_TYPES = {"config": dict, "counts": dict, "status": str, "corpus": dict,
                   "tokens": dict, "rejected_by_reason": dict, "summary": dict}


def manifest_problem(manifest: object) -> str | None:
    """What is wrong with a manifest's shape, in words; None when nothing is."""
    if not isinstance(manifest, dict):
        return f"not a JSON object but a {_json_type(manifest)}"
    if not isinstance(manifest.get("config"), dict):
        return "it has no 'config' object"
    for key, kind in _MANIFEST_TYPES.items():
        if key in manifest and not isinstance(manifest[key], kind):
            return f"'{key}' is a {_json_type(manifest[key])}, not a {_json_type(kind())}"
    for key, value in (manifest.get("counts") or {}).items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"counts.{key} is a {_json_type(value)}, not a number"
    return None


def _json_type(value: object) -> str:
    return {dict: "JSON object", list: "JSON list", str: "string", bool: "boolean",
            int: "number", float: "number", type(None): "null"}.get(type(value), "value")
