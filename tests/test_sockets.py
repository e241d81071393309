"""vLLM's socket files go to a folder of sigen's own, removed at exit or, after a kill, by the
next sigen (engines/sockets.py). The real engine's case: test_resume's one-story test, run with
its own temporary folder, which must be empty at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from selfinstruct_local.engines import sockets


@pytest.fixture
def temporary(monkeypatch):
    """A temporary folder with a short path, as /tmp has (tmp_path is too long for sockets)."""
    short = Path(tempfile.mkdtemp(prefix="sg"))
    monkeypatch.setattr(tempfile, "tempdir", str(short))
    monkeypatch.delenv(sockets.VARIABLE, raising=False)
    monkeypatch.setattr(sockets, "_ours", {})
    yield short
    shutil.rmtree(short, ignore_errors=True)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_one_folder_per_process_and_those_of_dead_processes_removed(temporary):
    dead = temporary / f"{sockets.PREFIX}{dead_pid()}-abc"
    living = temporary / f"{sockets.PREFIX}{os.getppid()}-def"
    other = temporary / "sigen-vllm-notes"  # not a folder sigen names
    for folder in (dead, living, other):
        folder.mkdir()
    (dead / "1b4e-socket").write_text("")
    folder = sockets.use_own_socket_folder()
    assert folder is not None and os.environ[sockets.VARIABLE] == folder
    assert os.path.dirname(folder) == str(temporary)
    assert os.path.basename(folder).startswith(f"{sockets.PREFIX}{os.getpid()}-")
    assert not dead.exists() and living.is_dir() and other.is_dir()
    assert sockets.use_own_socket_folder() == folder  # the same one for a second engine


def test_a_folder_inherited_from_another_sigen_is_not_shared(temporary, monkeypatch):
    parent = temporary / f"{sockets.PREFIX}{os.getppid()}-xyz"
    parent.mkdir()
    monkeypatch.setenv(sockets.VARIABLE, str(parent))
    folder = sockets.use_own_socket_folder()
    assert folder != str(parent) and os.environ[sockets.VARIABLE] == folder


def test_the_users_own_setting_is_kept(temporary, monkeypatch):
    monkeypatch.setenv(sockets.VARIABLE, str(temporary / "mine"))
    assert sockets.use_own_socket_folder() is None
    assert os.environ[sockets.VARIABLE] == str(temporary / "mine")
    assert not list(temporary.iterdir())


def test_a_temporary_folder_too_long_for_a_socket_path_is_left_to_vllm(tmp_path, monkeypatch):
    """A socket's path must fit in 107 bytes: with a long TMPDIR, sigen adds no folder of its
    own (vLLM would fail to start), and vLLM's default stays."""
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    monkeypatch.delenv(sockets.VARIABLE, raising=False)
    monkeypatch.setattr(sockets, "_ours", {})
    assert sockets.use_own_socket_folder() is None
    assert sockets.VARIABLE not in os.environ and not list(deep.iterdir())
