"""A run directory: append-only JSONL files plus a manifest that is replaced atomically.

Rows are appended and fsynced as soon as they are decided, or, in group-commit mode (the
generation loop), collected and written with one fsync per file at most GROUP_COMMIT_SECONDS
later, files in COMMIT_ORDER: an instruction's pending row reaches the disk before its instance
rows, and those before its final row, so a crash loses at most the rows of the last half second,
which the run then redoes as work in flight. A process killed mid-write leaves a torn last line;
reading detects it, reports it and (for a writer) truncates the file back to its last complete
line. Any other line that is not a row of its file (rowschema.py) is an error naming file:line.

Reading a run (`load_run`, for `sigen stats`, `export`, `judge`, `decontaminate`) is here too:
it changes nothing, and a file the manifest says holds rows must be there.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selfinstruct_local.errors import SigenError
from selfinstruct_local.rowschema import (
    CONTAMINATION_ROW,
    EMBEDDING_ROW,
    INSTANCE_ROW,
    INSTRUCTION_ROW,
    NUMBER,
    NUMBER_OR_NULL,
    OBJECT,
    PENDING_ROW,
    REJECTED_ROW,
    SCORE_ROW,
    TEXT,
    TEXT_OR_NULL,
    RowSchema,
    describe,
    value_problem,
)

INSTRUCTIONS = "machine_instructions.jsonl"
INSTANCES = "instances.jsonl"
REJECTED = "rejected.jsonl"
PENDING = "pending.jsonl"  # accepted by the filters, waiting for classification and instances
MANIFEST = "manifest.json"
DATA = "data.json"
SCORES = "scores.jsonl"  # sigen judge, sigen run --judge
CONTAMINATION = "contamination.jsonl"  # sigen decontaminate
CONTAMINATION_META = "contamination.json"
REPORT = "report.md"  # sigen stats
DIVERSITY = "diversity.json"  # sigen stats
EMBEDDINGS = "embeddings.jsonl"  # sigen run --semantic-threshold: the pool's vectors
COMMIT_ORDER = (PENDING, REJECTED, INSTANCES, INSTRUCTIONS)
GROUP_COMMIT_SECONDS = 0.5

SCHEMAS: dict[str, RowSchema] = {
    PENDING: PENDING_ROW, INSTRUCTIONS: INSTRUCTION_ROW, INSTANCES: INSTANCE_ROW,
    REJECTED: REJECTED_ROW, SCORES: SCORE_ROW, CONTAMINATION: CONTAMINATION_ROW,
    EMBEDDINGS: EMBEDDING_ROW,
}
DAMAGED = ("the run directory is damaged. Restore the file from a backup, or start a new run "
           "with another --output.")
# How to mend a file that sigen can write again (a quality command's, the run's vectors).
_MEND = {
    SCORES: "scores.jsonl is damaged. Restore it, or delete that line: its task is then judged "
            "again by `sigen judge`.",
    CONTAMINATION: "contamination.jsonl is damaged. Restore it, or delete it and "
                   "contamination.json and run `sigen decontaminate` again against every "
                   "benchmark.",
    EMBEDDINGS: "embeddings.jsonl is damaged. Delete it and resume: the pool's vectors are "
                "computed again from the instructions.",
}


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
AGAIN = "run the same command again"
AGAIN_TO_RESUME = "run the same command again to resume"


class StorageError(SigenError):
    """A file could not be written. Everything written before is intact (appends are
    line-sized, other files are replaced atomically)."""


@contextmanager
def writing(path: Path, again: str = AGAIN) -> Iterator[None]:
    """Turn a write failure the machine is to blame for into a StorageError that says what
    failed and what to do; `again`: what the user then runs."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRORS:
            raise
        raise StorageError(
            f"cannot write {path}: {STORAGE_ERRORS[exc.errno]} ({exc.strerror}). Nothing "
            f"written before is lost: free space or fix the folder, then {again}.") from None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RunStore:
    def __init__(self, root: Path, group_commit: bool = False,
                 clock: Callable[[], float] = time.monotonic, again: str = AGAIN) -> None:
        self.root = Path(root)
        self.group_commit = group_commit
        self.clock = clock
        self.again = again  # what a write failure tells the user to run
        self._buffer: dict[str, list[str]] = {}
        self._oldest: float | None = None  # when the oldest buffered row was appended

    @classmethod
    def open(cls, root: Path, group_commit: bool = False) -> RunStore:
        """The store `sigen run` writes with, its folder created if needed (readers use the
        constructor, which creates nothing)."""
        root = Path(root)
        try:
            with writing(root, AGAIN_TO_RESUME):
                root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SigenError(f"cannot create the run directory {root}: {exc.strerror}. Pass an "
                             "--output in a folder you can write to.") from None
        return cls(root, group_commit, again=AGAIN_TO_RESUME)

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
            with writing(self.path(name), self.again), \
                    open(self.path(name), "a", encoding="utf-8"):
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
        with writing(self.path(name), self.again), \
                open(self.path(name), "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def read(
        self, name: str, warn: Callable[[str], None] = print, repair: bool = True
    ) -> list[dict]:
        """All rows of a JSONL file ([] when it does not exist). A last line without its
        newline that is not a JSON object is a write cut short (torn): it is skipped with a
        warning. Any other line that is not a JSON object, or a row that lacks a key its file's
        rows have or holds a value of the wrong type (SCHEMAS), is an error naming file:line.

        With `repair` (the writer's view, on resume) the file is also mended (see `repair`);
        without it (readers such as `sigen stats`, maybe while a run is writing) nothing changes.
        """
        path = self.path(name)
        data = _read_bytes(path)
        if data is None:
            return []
        schema = SCHEMAS.get(name)
        rows: list[dict] = []
        for lineno, raw in enumerate(data.splitlines(keepends=True), start=1):
            row = _parse_row(raw)
            if row is None:
                if not raw.endswith(b"\n"):  # the last line, cut short by a kill
                    warn(f"{path}:{lineno}: dropping a torn last line left by an interrupted write")
                    break
                raise SigenError(f"{path}:{lineno}: not a JSON object; "
                                 f"{_MEND.get(name, DAMAGED)}")
            problem = schema.problem(row) if schema is not None else None
            if problem:
                raise SigenError(f"{path}:{lineno}: {problem}; {_MEND.get(name, DAMAGED)}")
            rows.append(row)
        if repair:
            self.repair(name)
        return rows

    def repair(self, name: str) -> None:
        """Mend what a kill leaves at the end of a file being appended to: a torn last line
        (no newline, not a JSON object) is cut off; a complete last row without its newline
        gets one, so that later appends start on a line of their own."""
        path = self.path(name)
        data = _read_bytes(path)
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        if _parse_row(data[start:]) is None:
            self._truncate(path, start)
        else:
            with writing(path, self.again), open(path, "ab") as handle:
                handle.write(b"\n")

    def _truncate(self, path: Path, size: int) -> None:
        with writing(path, self.again), open(path, "r+b") as handle:
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
        write_atomic(self.path(name), text.encode("utf-8"), self.again)

    def read_json(self, name: str) -> object | None:
        """A JSON file's value; None when the file does not exist."""
        path = self.path(name)
        data = _read_bytes(path)
        if data is None:
            return None
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise SigenError(f"{path}: not valid JSON; {_MEND.get(name, DAMAGED)}") from None


def _read_bytes(path: Path) -> bytes | None:
    """A file's bytes; None when it does not exist, SigenError when it cannot be read (a
    folder in its place, no permission)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SigenError(f"cannot read {path}: {exc.strerror}; {DAMAGED}") from None


def _parse_row(raw: bytes) -> dict | None:
    try:
        row = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return row if isinstance(row, dict) else None


def write_atomic(target: Path, data: bytes, again: str = AGAIN) -> None:
    """Replace `target` with `data`: write a temporary sibling, fsync, rename.

    A reader sees the old file or the new one, never half of one, whatever kills the process.
    A path that cannot be written (a folder in the way, a parent that is a file) is a
    SigenError too: `target` is often a path the user gave.
    """
    try:
        with writing(target, again):
            _write_atomic(target, data)
    except StorageError:
        raise
    except OSError as exc:
        raise SigenError(f"cannot write {target}: {exc.strerror}. Nothing written before is "
                         "lost; check the path.") from None


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


# -- the run directory as a target of `sigen run`, and of nothing else -------------------------
# Every file a run writes, and the files of its quality commands and report: no other command
# may write one of these in a run directory.
RUN_FILES = frozenset({
    INSTRUCTIONS, INSTANCES, REJECTED, PENDING, MANIFEST, DATA, SCORES, CONTAMINATION,
    CONTAMINATION_META, "engine.log", ".sigen.lock", REPORT, DIVERSITY, EMBEDDINGS,
})
# What else sigen's commands leave in a run directory that has its manifest: `sigen stats`'s
# plots, `sigen export`'s default output with its card and dataset_info.json, `sigen dedup`'s
# default output for a run file.
COMMAND_OUTPUTS = ("report-*.png", "export.*", "README.md", "dataset_info.json", "*.dedup.jsonl")


def check_output_dir(root: Path) -> None:
    """Refuse, before anything is written, a --output that cannot be a run directory: a file,
    a path under a file, or a folder holding files that no sigen command wrote."""
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
    has_manifest = MANIFEST in names
    foreign = sorted(n for n in names if not _written_by_sigen(n, has_manifest))
    if not has_manifest and names & {INSTRUCTIONS, INSTANCES, REJECTED, PENDING}:
        foreign = sorted(names & {INSTRUCTIONS, INSTANCES, REJECTED, PENDING}) + foreign
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise SigenError(f"--output {root} holds files that no sigen run wrote ({shown}); "
                         "sigen writes only into a new or empty folder or a run of its own. "
                         "Pass another --output.")


def _written_by_sigen(name: str, in_a_run: bool) -> bool:
    if name not in RUN_FILES and name.startswith("."):
        name = name[1:].rsplit(".", 1)[0]  # a temporary sibling of an atomic write left by a
        # kill: `.manifest.json.x1y2` is manifest.json's
    return name in RUN_FILES or in_a_run and any(
        fnmatch.fnmatchcase(name, pattern) for pattern in COMMAND_OUTPUTS)


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds a sigen run: a manifest.json whose config is a JSON object."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("config"), dict)


def refuse_run_file(path: Path | str, option: str) -> None:
    """SigenError when writing `path` would replace a file of a sigen run (RUN_FILES in a
    folder that holds a run), links and `..` resolved: an output of `sigen export` or
    `sigen dedup` must never destroy a run."""
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError) as exc:  # a loop of links
        raise SigenError(f"{path}: {exc}; pass another {option}.") from None
    if resolved.name in RUN_FILES and holds_run(resolved.parent):
        via = "" if resolved == Path(path).absolute() else f" (that is {resolved})"
        raise SigenError(f"{path}{via} is a file of the sigen run in {resolved.parent}: "
                         f"writing it would destroy the run. Pass another {option}.")


# -- the manifest ------------------------------------------------------------------------------


def read_previous_manifest(root: Path) -> dict | None:
    """The manifest of the run in `root` (None when there is none yet), checked enough to
    read and continue the run: a JSON object of the right shape (`manifest_problem`) whose
    configuration has the types `sigen run` saves."""
    from selfinstruct_local.config import RunConfig  # config.py imports this module

    path = Path(root) / MANIFEST
    try:
        data = _read_bytes(path)
        manifest = None if data is None else json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SigenError(f"{path}: not valid JSON ({exc}); {DAMAGED}") from None
    if data is None:
        return None
    problem = manifest_problem(manifest)
    if problem:
        raise SigenError(f"{path}: {problem}; {DAMAGED}")
    RunConfig.from_json(manifest["config"], where=path)
    return manifest


# Manifest sections and the kind each must be when present; then the keys of a section that
# readers use, with their kinds.
_MANIFEST_TYPES = {
    **dict.fromkeys(("config", "counts", "corpus", "tokens", "rejected_by_reason",
                     "instances_dropped_by_reason", "summary", "model", "engine", "tool"),
                    OBJECT),
    "status": TEXT,
    **dict.fromkeys(("engine_seconds", "wall_seconds", "generation_seconds"), NUMBER),
}
_SECTION_TYPES = {
    "model": {"name": TEXT_OR_NULL, "path": TEXT_OR_NULL, "prompt_format": TEXT_OR_NULL},
    "engine": {"name": TEXT_OR_NULL, "dtype": TEXT_OR_NULL},
    "tool": {"version": TEXT_OR_NULL},
    "tokens": {"generated": NUMBER_OR_NULL, "prompt": NUMBER_OR_NULL},
}


def manifest_problem(manifest: object) -> str | None:
    """What is wrong with a manifest's shape, in words; None when nothing is."""
    if not isinstance(manifest, dict):
        return f"not a JSON object but {describe(manifest)}"
    if not isinstance(manifest.get("config"), dict):
        return "it has no 'config' object"
    for key, kind in _MANIFEST_TYPES.items():
        if key in manifest and (problem := value_problem(key, manifest[key], kind)):
            return problem
    for section, keys in _SECTION_TYPES.items():
        values = manifest.get(section) or {}
        for key, kind in keys.items():
            if key in values and (problem := value_problem(f"{section}.{key}", values[key],
                                                            kind)):
                return problem
    for key, value in (manifest.get("counts") or {}).items():
        if problem := value_problem(f"counts.{key}", value, NUMBER):
            return problem
    return None


def expected_rows(name: str, manifest: dict) -> int | float | None:
    """How many rows the manifest says `name` holds at least (None: it does not say)."""
    counts = manifest.get("counts") or {}
    if name == REJECTED:
        dropped = manifest.get("instances_dropped_by_reason") or {}
        if "instructions_rejected" not in counts or not all(
                isinstance(n, int | float) for n in dropped.values()):
            return None
        return counts["instructions_rejected"] + sum(dropped.values())
    # pending.jsonl: a run that asked for nothing yet (no round) has no pending row.
    key = {INSTRUCTIONS: "accepted", INSTANCES: "instances", PENDING: "rounds"}[name]
    return counts.get(key)


_ROWS_WORDS = {INSTRUCTIONS: "instructions accepted", INSTANCES: "instances",
               REJECTED: "rejected instructions and dropped instances", PENDING: "rounds"}


def missing_file_problem(root: Path, name: str, manifest: dict) -> str | None:
    """Why `name` missing from the run in `root` is damage (None when the manifest says the
    file would hold nothing, so it may not exist yet)."""
    if (root / name).exists():
        return None
    expected = expected_rows(name, manifest)
    if expected == 0:
        return None
    says = ("does not say it holds nothing" if expected is None
            else f"counts {expected} {_ROWS_WORDS[name]}")
    return f"{name} is missing, but the run's manifest {says}"


# -- reading a run -----------------------------------------------------------------------------


def read_rows(path: Path, warn: Callable[[str], None] = _stderr) -> list[dict]:
    """Rows of a JSONL file without modifying it; a torn last line is skipped with a warning."""
    return RunStore(path.parent).read(path.name, warn, repair=False)


@dataclass
class Run:
    root: Path
    manifest: dict
    instructions: list[dict]  # accepted, in file order
    instances: list[dict]  # only those of accepted instructions
    rejected: list[dict]


def load_run(run_dir: Path | str, warn: Callable[[str], None] = _stderr) -> Run:
    """Read a run directory without changing it; SigenError if it is not one, or is damaged: a
    manifest of the wrong shape, a file missing that the manifest says holds rows, a bad row."""
    root = Path(run_dir)
    if not root.is_dir():
        raise SigenError(f"{root} is not a directory; give the run directory of `sigen run`")
    manifest = read_previous_manifest(root)
    if manifest is None:
        missing = [n for n in (MANIFEST, INSTRUCTIONS) if not (root / n).exists()]
        raise SigenError(f"{root} is not a complete sigen run directory: {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} missing")
    for name in (INSTRUCTIONS, INSTANCES, REJECTED):
        if problem := missing_file_problem(root, name, manifest):
            raise SigenError(f"{root}: {problem}; {DAMAGED}")
    store = RunStore(root)
    instructions = store.read(INSTRUCTIONS, warn, repair=False)
    accepted = {row["id"] for row in instructions}
    # Instance rows are written just before their instruction row: rows whose instruction is not
    # (yet) accepted belong to work in flight or cut short by a crash, and are not part of the data.
    instances = [r for r in store.read(INSTANCES, warn, repair=False)
                 if r["instruction_id"] in accepted]
    if problem := counts_problem(manifest, len(instructions), len(instances)):
        raise SigenError(f"{root}: {problem}; {DAMAGED}")
    return Run(root, manifest, instructions, instances, store.read(REJECTED, warn, repair=False))


def counts_problem(manifest: dict, instructions: int, instances: int) -> str | None:
    """Rows the manifest counts that the files lack (`instructions`: rows in
    machine_instructions.jsonl, `instances`: instance rows of those instructions). The manifest
    is saved after the rows it counts and files only grow, so they hold at least as many rows,
    even while a run is appending; except when the run failed: the manifest saved then may count
    rows whose write failed."""
    if manifest.get("status") == "failed":
        return None
    counts = manifest.get("counts") or {}
    for name, key, found, what in ((INSTRUCTIONS, "accepted", instructions, "instruction rows"),
                                   (INSTANCES, "instances", instances,
                                    "instance rows of its accepted instructions")):
        expected = counts.get(key)
        if isinstance(expected, int | float) and expected > found:
            return (f"the manifest counts {expected} {key} but {name} holds {found} {what}: "
                    "rows are missing")
    return None
