"""Every command that reads a run directory, on run directories damaged in the ways a disk, a
kill or a person damages them: a file missing, a line cut or replaced by garbage anywhere, a
value of the wrong JSON type, the manifest replaced, a file that no sigen command wrote.

The run is a real one (the `scripted_run` fixture: `sigen run`'s own code with the scripted
engine), copied for each example; every command runs in this process through the CLI's entry
point, as `sigen ...` would. Whatever the damage: exit status 0 or 2, never a traceback, and
every file the command does not own is byte for byte as it was (for `sigen run --resume`, all of
them when it refuses). Where the damage is certain (a file the readers need is gone, a row they
rely on is broken), the command must fail and name it. No model loads: a resume or a judge that
gets past the checks fails within seconds at connecting to 127.0.0.1:9, where nothing listens.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfinstruct_local import cli, runlock
from selfinstruct_local.errors import SigenError
from selfinstruct_local.export.formats import FORMATS
from selfinstruct_local.pipeline.state import load_state
from selfinstruct_local.runstore import (
    COMMAND_OUTPUTS,
    CONTAMINATION,
    CONTAMINATION_META,
    DATA,
    INSTANCES,
    INSTRUCTIONS,
    MANIFEST,
    PENDING,
    REJECTED,
    RUN_FILES,
    SCORES,
    RunStore,
    check_output_dir,
)
from tests.conftest import DEAD_URL

CONNECT_FAILED = "no server answered"  # the openai engine's error when nothing listens
JOURNAL = (PENDING, INSTRUCTIONS, REJECTED, INSTANCES)
READERS = frozenset({INSTRUCTIONS, INSTANCES, REJECTED})  # what runstore.load_run reads
JSONL_FILES = (*JOURNAL, SCORES, CONTAMINATION)
JSON_FILES = (MANIFEST, CONTAMINATION_META, DATA)


# -- running sigen in this process -------------------------------------------------------------


def sigen(*args: object) -> tuple[int, str]:
    """`sigen ARGS` through the CLI's entry point, in this process: (exit status, what it
    printed on stdout and stderr). An exception that is not a SigenError escapes, as the
    traceback a user would see."""
    out = io.StringIO()
    with mock.patch.object(sys, "argv", ["sigen", *map(str, args)]), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            cli.main()
        except SystemExit as exc:
            return (exc.code if isinstance(exc.code, int) else int(exc.code is not None),
                    out.getvalue())
    return 0, out.getvalue()


@contextlib.contextmanager
def copy_of(run: Path) -> Iterator[tuple[Path, Path]]:
    """A copy of the run, and a scratch folder beside it; the run locks this process took on
    the copy are let go at the end (a run's lock lives as long as its process)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy)
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        try:
            yield copy, scratch
        finally:
            for held in [p for p in runlock._held if p.is_relative_to(Path(tmp).resolve())]:
                os.close(runlock._held.pop(held))


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


# -- the commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    args: Callable[[Path, Path, Path], list]  # (run, scratch folder, benchmark) -> argv
    reads: frozenset[str]  # run files whose rows it reads (through RunStore)
    owns: tuple[str, ...] = ()  # what it may write in the run directory (fnmatch patterns)
    resumes: bool = False


COMMANDS = {
    "stats": Command(lambda r, s, b: ["stats", r], READERS | {SCORES, CONTAMINATION},
                     ("report.md", "report-*.png", "diversity.json")),
    **{f"export-{fmt}": Command(lambda r, s, b, fmt=fmt: ["export", r, "-f", fmt],
                                READERS | {CONTAMINATION}, ("export.*", "README.md"))
       for fmt in FORMATS},
    "export-min-score": Command(
        lambda r, s, b: ["export", r, "-f", "jsonl", "--min-score", "3", "-o", s / "x.jsonl"],
        READERS | {CONTAMINATION, SCORES}),
    "judge": Command(lambda r, s, b: ["judge", r, "--engine", "openai", "--base-url", DEAD_URL,
                                      "--server-timeout", "1"],
                     READERS | {SCORES}, (SCORES, "engine.log", ".sigen.lock")),
    "decontaminate": Command(lambda r, s, b: ["decontaminate", r, "--against", b, "--n", "5"],
                             READERS | {CONTAMINATION},
                             (CONTAMINATION, CONTAMINATION_META, ".sigen.lock")),
    "dedup": Command(lambda r, s, b: ["dedup", r / INSTANCES, "-o", s / "kept.jsonl"],
                     frozenset()),  # its own reader, which names lines its own way
    # A finished run: only its instances and scores are read, for tasks left to judge.
    "resume-finished": Command(lambda r, s, b: ["run", "--resume", r, "--base-url", DEAD_URL],
                               frozenset({INSTANCES, SCORES}), (".sigen.lock", "engine.log"),
                               resumes=True),
}
RESUME = Command(lambda r, s, b: ["run", "--resume", r, "--base-url", DEAD_URL, "-n", "12"],
                 frozenset({*JOURNAL, SCORES}), (".sigen.lock", "engine.log"), resumes=True)


# -- the damage --------------------------------------------------------------------------------


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@dataclass(frozen=True)
class Damage:
    """One change to a copy of the run; `must_fail`: what the output of a command that must
    refuse the result contains (None: no certain outcome), given the undamaged run."""

    def apply(self, root: Path) -> None:
        raise NotImplementedError

    def must_fail(self, name: str, command: Command, run: Path) -> str | None:
        return None


@dataclass(frozen=True)
class Removed(Damage):
    file: str

    def apply(self, root: Path) -> None:
        (root / self.file).unlink()

    def must_fail(self, name: str, command: Command, run: Path) -> str | None:
        if self.file == MANIFEST and name != "dedup":
            return MANIFEST
        if name == "resume-finished":  # with no instances, nothing is left to judge
            return None
        if self.file in READERS & command.reads or self.file == PENDING and name == "resume":
            return f"{self.file} is missing"
        if self.file == CONTAMINATION and CONTAMINATION in command.reads:
            return f"{CONTAMINATION} is missing"  # the record says tasks were flagged
        return None


@dataclass(frozen=True)
class Replaced(Damage):
    """A whole line replaced by `text` (a line cut short, or garbage), newline kept."""

    file: str
    line: int
    text: bytes

    def damaged(self, root: Path) -> bytes:
        lines = lines_of(root / self.file)
        lines[self.line % len(lines)] = self.text + b"\n"
        return b"".join(lines)

    def apply(self, root: Path) -> None:
        (root / self.file).write_bytes(self.damaged(root))

    def must_fail(self, name: str, command: Command, run: Path) -> str | None:
        if self.file == MANIFEST:  # a pretty-printed JSON object: still one if a line is "},"
            broken = not isinstance(_json_or_none(self.damaged(run)), dict)
            return MANIFEST if broken and name != "dedup" else None
        if self.file in command.reads:
            number = self.line % len(lines_of(run / self.file)) + 1
            return f"{self.file}:{number}: not a JSON object"
        return None


@dataclass(frozen=True)
class Truncated(Damage):
    """The file cut at a byte, as a kill mid-write leaves it (or emptied)."""

    file: str
    share: float

    def apply(self, root: Path) -> None:
        data = (root / self.file).read_bytes()
        (root / self.file).write_bytes(data[:int(len(data) * self.share)])


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The keys each file's readers rely on and what they hold: a row where one holds something else
# must be refused, naming the file, the line and the key, by every command that reads the file.
RELIED_ON: dict[str, dict[str, Callable[[object], bool]]] = {
    PENDING: {"id": lambda v: isinstance(v, str), "round": _whole,
              "instruction": lambda v: isinstance(v, str)},
    INSTRUCTIONS: {"id": lambda v: isinstance(v, str), "round": _whole,
                   "instruction": lambda v: isinstance(v, str), "num_instances": _whole},
    INSTANCES: {key: lambda v: isinstance(v, str)
                for key in ("instruction_id", "instruction", "input", "output")},
    REJECTED: {"stage": lambda v: v in ("instruction", "instance"),
               "reason": lambda v: isinstance(v, str)},
    SCORES: {"id": lambda v: isinstance(v, str),
             "score": lambda v: v is None or _whole(v) and 1 <= v <= 5},
    CONTAMINATION: {"id": lambda v: isinstance(v, str),
                    "benchmark": lambda v: isinstance(v, str)},
}


@dataclass(frozen=True)
class Retyped(Damage):
    """One value of a row (key `key` counted in the row's keys) replaced by `value`."""

    file: str
    line: int
    key: int
    value: object

    def target(self, root: Path) -> tuple[int, str]:
        lines = lines_of(root / self.file)
        number = self.line % len(lines)
        keys = sorted(json.loads(lines[number]))
        return number, keys[self.key % len(keys)]

    def apply(self, root: Path) -> None:
        lines = lines_of(root / self.file)
        number, key = self.target(root)
        row = json.loads(lines[number])
        row[key] = self.value
        lines[number] = json.dumps(row).encode() + b"\n"
        (root / self.file).write_bytes(b"".join(lines))

    def must_fail(self, name: str, command: Command, run: Path) -> str | None:
        number, key = self.target(run)
        check = RELIED_ON[self.file].get(key)
        if self.file in command.reads and check is not None and not check(self.value):
            return f"{self.file}:{number + 1}: '{key}'"
        return None


MANIFEST_KEYS = ("config", "counts", "status", "model", "engine", "tokens", "summary", "tool",
                 "counts.accepted", "counts.instances", "counts.rounds", "config.model",
                 "config.engine", "config.lang", "config.seed", "config.judge", "config.seeds",
                 "config.num_instructions", "model.name", "model.path", "engine.name",
                 "tokens.generated", "engine_seconds", "wall_seconds", "rejected_by_reason",
                 "instances_dropped_by_reason")


@dataclass(frozen=True)
class ManifestValue(Damage):
    """One value of the manifest (a section, or a key in one) replaced by `value`."""

    key: str
    value: object

    def apply(self, root: Path) -> None:
        manifest = json.loads((root / MANIFEST).read_text())
        section, _, key = self.key.rpartition(".")
        (manifest[section] if section else manifest)[key] = self.value
        (root / MANIFEST).write_text(json.dumps(manifest))

    def must_fail(self, name: str, command: Command, run: Path) -> str | None:
        section, _, key = self.key.rpartition(".")
        broken = (self.key in ("config", "counts") and not isinstance(self.value, dict)
                  or section == "counts" and not _number(self.value))
        return "manifest.json" if broken and name != "dedup" else None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


@dataclass(frozen=True)
class ManifestAs(Damage):
    """manifest.json holding something that is not a run's manifest at all."""

    data: bytes

    def apply(self, root: Path) -> None:
        (root / MANIFEST).write_bytes(self.data)

    def must_fail(self, name: str, command: Command, run: Path) -> str | None:
        return None if name == "dedup" else "manifest.json"


@dataclass(frozen=True)
class Foreign(Damage):
    """A file no sigen command wrote, dropped into the run directory."""

    name: str

    def apply(self, root: Path) -> None:
        (root / self.name).write_text("mine\n")

    def must_fail(self, name: str, command: Command, run: Path) -> str | None:
        return f"holds files that no sigen run wrote ({self.name}" if command.resumes else None


VALUES = st.sampled_from(["text", "", 7, 0, -3, 2.5, float("nan"), float("inf"), None, True,
                          False, [], ["x", 1], {}, {"id": 3}])
LINE = st.integers(0, 10_000)
GARBAGE = st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)).map(
    lambda b: b.replace(b"\n", b" ").replace(b"\r", b" ")).filter(
    lambda b: not isinstance(_json_or_none(b), dict))
DAMAGE = st.one_of(
    st.builds(Removed, st.sampled_from([*JSONL_FILES, *JSON_FILES])),
    st.builds(Replaced, st.sampled_from([*JSONL_FILES, MANIFEST]), LINE, GARBAGE),
    st.builds(Truncated, st.sampled_from([*JSONL_FILES, *JSON_FILES]),
              st.floats(0, 1, exclude_max=True)),
    st.builds(Retyped, st.sampled_from(JSONL_FILES), LINE, st.integers(0, 50), VALUES),
    st.builds(ManifestValue, st.sampled_from(MANIFEST_KEYS), VALUES),
    st.builds(ManifestAs, st.sampled_from([b"[]", b"[1, 2]", b'"run"', b"3", b"null", b"{}",
                                           b'{"config": [1]}', b"{", b"\xff\xfe", b""])),
    st.builds(Foreign, st.from_regex(r"\A[a-z][a-z0-9_-]{0,12}\.(txt|csv|jsonl)\Z")
              .filter(lambda n: n not in RUN_FILES
                      and not any(fnmatchcase(n, p) for p in COMMAND_OUTPUTS))),
)


def _json_or_none(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


@pytest.fixture(scope="module")
def run(scripted_run) -> Path:
    return scripted_run


# -- the checks --------------------------------------------------------------------------------


def check(run: Path, name: str, command: Command, damage: Damage | None) -> str:
    """Damage a copy of the run, run the command on it, check the outcome; its output."""
    with copy_of(run) as (root, scratch):
        if damage is not None:
            damage.apply(root)
        before = snapshot(root)
        code, output = sigen(*command.args(root, scratch, run.parent / "bench.txt"))
        after = snapshot(root)
        assert code in (0, 2), output
        assert "Traceback" not in output, output
        expected = damage.must_fail(name, command, run) if damage is not None else None
        if expected is not None:
            assert code == 2 and expected in output, (expected, output)
        past_checks = command.resumes and CONNECT_FAILED in output
        for file in sorted(before.keys() | after.keys()):
            if any(fnmatchcase(file, pattern) for pattern in command.owns):
                continue
            old, new = before.get(file), after.get(file)
            if past_checks and file in (*JOURNAL, SCORES) and old is not None \
                    and new is not None:
                # Repaired before connecting: a torn last line cut, rows of unfinished
                # instructions dropped; no line added or changed.
                assert set(new.splitlines()) <= set(old.splitlines()), file
                continue
            assert new == old, f"{name} changed {file}: {output}"
        return output


@settings(max_examples=120, deadline=None)
@given(damage=DAMAGE, name=st.sampled_from(sorted(set(COMMANDS) - {"stats"})))
def test_quick_commands_on_a_damaged_run(run, damage, name):
    check(run, name, COMMANDS[name], damage)


@settings(max_examples=6, deadline=None)
@given(damage=DAMAGE)
def test_stats_on_a_damaged_run(run, damage):
    check(run, "stats", COMMANDS["stats"], damage)


@settings(max_examples=15, deadline=None)
@given(damage=DAMAGE)
def test_resume_on_a_damaged_run(run, damage):
    check(run, "resume", RESUME, damage)


def test_every_command_succeeds_on_the_undamaged_run(run):
    """The baseline the damage is measured against; a resume gets past every check and stops
    at connecting, within seconds."""
    assert all(lines_of(run / name) for name in (*JOURNAL, SCORES, CONTAMINATION))
    for name, command in COMMANDS.items():
        assert check(run, name, command, None), name
    output = check(run, "resume", RESUME, None)
    assert "Resuming" in output and CONNECT_FAILED in output


# -- resume: refused with nothing changed ------------------------------------------------------


def refused_resume(root: Path, expected: str) -> None:
    before = snapshot(root)
    code, output = sigen("run", "--resume", root, "--base-url", DEAD_URL, "-n", "12")
    assert code == 2 and expected in output, output
    assert "Nothing was changed" in output and CONNECT_FAILED not in output
    after = snapshot(root)
    del before[".sigen.lock"], after[".sigen.lock"]  # who holds the lock, not data
    assert after == before


def test_resume_without_the_finished_instructions_is_refused(run):
    """The reported case: machine_instructions.jsonl gone, and the resume emptied
    instances.jsonl ("dropping 8 instance rows of unfinished instructions")."""
    with copy_of(run) as (root, _):
        (root / INSTRUCTIONS).unlink()
        refused_resume(root, "machine_instructions.jsonl is missing, but the manifest says the "
                             "run has generated data")


def test_resume_of_files_that_do_not_belong_together_is_refused(run):
    with copy_of(run) as (root, _):
        (root / PENDING).write_bytes(b"".join(lines_of(root / PENDING)[:3]))
        refused_resume(root, "which pending.jsonl does not hold")


@pytest.mark.parametrize(("name", "key"), [(INSTRUCTIONS, "accepted"),
                                           (INSTANCES, "instances")])
def test_resume_of_files_with_fewer_rows_than_the_manifest_counts_is_refused(run, name, key):
    with copy_of(run) as (root, _):
        (root / name).write_bytes(b"".join(lines_of(root / name)[:-1]))
        refused_resume(root, f"the manifest counts 8 {key} but {name} holds 7")


def test_a_run_that_failed_on_a_write_resumes(run):
    """The manifest saved when a write failed counts rows that never reached the disk: the
    resume goes on (and repairs) instead of refusing the run."""
    with copy_of(run) as (root, _):
        (root / INSTRUCTIONS).write_bytes(b"".join(lines_of(root / INSTRUCTIONS)[:-2]))
        manifest = json.loads((root / MANIFEST).read_text())
        state, journal = load_state(RunStore(root), {**manifest, "status": "failed"},
                                    warn=lambda _m: None)
        assert state.accepted == 6 and len(state.in_flight) == 2 and journal
        with pytest.raises(SigenError, match="the manifest counts 8 accepted"):
            load_state(RunStore(root), manifest, warn=lambda _m: None)


def test_a_run_that_generated_nothing_yet_resumes_without_its_files(tmp_path):
    store = RunStore(tmp_path)
    counts = {"rounds": 0, "accepted": 0, "instances": 0, "instructions_rejected": 0}
    state, journal = load_state(store, {"config": {}, "counts": counts}, warn=print)
    assert (state.accepted, journal, list(tmp_path.iterdir())) == (0, [], [])


# -- outputs never replace a run's files -------------------------------------------------------


@pytest.mark.parametrize("target", sorted(RUN_FILES))
def test_export_never_writes_a_file_of_a_run(run, target):
    with copy_of(run) as (root, _):
        before = snapshot(root)
        code, output = sigen("export", root, "-f", "jsonl", "--no-card", "-o", root / target)
        assert code == 2 and "writing it would destroy the run" in output, output
        assert snapshot(root) == before


def test_export_and_dedup_see_through_links_and_dots(run):
    with copy_of(run) as (root, scratch):
        before = snapshot(root)
        (scratch / "link.jsonl").symlink_to(root / PENDING)
        (scratch / "dir").symlink_to(root)
        for output in (scratch / "link.jsonl", scratch / "dir" / INSTRUCTIONS,
                       root / "sub" / ".." / MANIFEST, scratch / ".." / "run" / SCORES):
            code, text = sigen("export", root, "-f", "alpaca", "--no-card", "-o", output)
            assert code == 2 and "writing it would destroy the run" in text, text
            code, text = sigen("dedup", root / INSTANCES, "-o", output)
            assert code == 2 and "writing it would destroy the run" in text, text
        (scratch / "README.md").symlink_to(root / REJECTED)  # the card beside the export
        code, text = sigen("export", root, "-f", "alpaca", "-o", scratch / "a.json")
        assert code == 2 and f"is a file of the sigen run in {root}" in text, text
        assert snapshot(root) == before


def test_dedup_never_writes_its_input_or_its_pool(tmp_path):
    data, pool = tmp_path / "data.jsonl", tmp_path / "pool.jsonl"
    data.write_text('{"instruction": "Name a color."}\n')
    pool.write_text('{"instruction": "Name a fruit."}\n')
    for output, what in ((data, "the input"), (pool, "the --against pool")):
        code, text = sigen("dedup", data, "--against", pool, "-o", output)
        assert code == 2 and f"output would overwrite {what}" in text, text
    assert data.read_text() == '{"instruction": "Name a color."}\n'
    assert pool.read_text() == '{"instruction": "Name a fruit."}\n'


def test_what_sigen_commands_leave_in_a_run_does_not_stop_its_resume(run):
    """`sigen stats`, `sigen export` and `sigen dedup` with their default outputs write into
    the run directory; a resume must not take those for files of someone else."""
    with copy_of(run) as (root, _):
        for args in (("export", root, "-f", "sharegpt", "--llama-factory"),
                     ("export", root, "-f", "parquet"), ("dedup", root / INSTRUCTIONS)):
            assert sigen(*args)[0] == 0
        for name in ("report.md", "report-max-rouge.png", ".export.jsonl.a8x2"):
            (root / name).write_text("")
        check_output_dir(root)


def test_a_write_failure_of_export_says_what_failed_and_not_to_resume(run, tmp_path):
    import resource
    import subprocess

    from tests.conftest import REPO

    with copy_of(run) as (root, scratch):
        def small_files():
            resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))

        result = subprocess.run(
            [sys.executable, "-m", "selfinstruct_local", "export", str(root), "-f", "alpaca",
             "--no-card", "-o", str(scratch / "a.json")], capture_output=True, text=True,
            cwd=REPO,
            timeout=120, preexec_fn=small_files)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"error: cannot write {scratch / 'a.json'}: the file size limit is reached" \
            in result.stderr
        assert "Nothing written before is lost" in result.stderr
        assert "resume" not in result.stderr
        assert not list(scratch.iterdir())  # no temporary file left either


def test_plots_need_nothing_from_the_report():
    """No import cycle: plots.py takes the bin edges from the summary and `num` from
    readable.py."""
    import subprocess

    code = ("import sys, selfinstruct_local.plots; "
            "assert 'selfinstruct_local.report' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
