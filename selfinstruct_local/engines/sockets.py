"""A folder of sigen's own for vLLM's sockets, so that no run leaves files behind in /tmp.

vLLM's engine talks to its engine-core process over ZeroMQ sockets, which it creates as files
under VLLM_RPC_BASE_PATH (by default the temporary folder) and never removes: seven files in /tmp
per engine start, measured with the CPU build, and as many per `vllm serve`. Before sigen starts
an engine (in-process, or a server, which inherits the setting) it points VLLM_RPC_BASE_PATH at a
folder of this process's own, `sigen-vllm-PID-*` in the temporary folder, removed when sigen
exits. A sigen that was killed cannot remove its folder: the next one that starts an engine
removes the folders of sigen processes that no longer exist. A user's own VLLM_RPC_BASE_PATH is
left as it is.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "sigen-vllm-"
VARIABLE = "VLLM_RPC_BASE_PATH"
# A socket's path, FOLDER/<36-character uuid>, must fit in 107 bytes (sockaddr_un): vLLM fails
# to start otherwise. Where the temporary folder's own path is too long for a folder of ours
# inside it, vLLM's default is left as it is.
MAX_FOLDER_CHARS = 107 - 37
# What our folder adds after the temporary folder's path and PREFIX: "/" before it, the pid (up
# to 7 digits), "-" and mkdtemp's 8 random characters, 17 at most.
NAME_EXTRA_CHARS = 20
_ours: dict[int, str] = {}  # this process's folder, by process id (a forked child has none)


def use_own_socket_folder() -> str | None:
    """Point vLLM's sockets at this process's folder (made on first use); the folder, or None
    where the user set VLLM_RPC_BASE_PATH or the temporary folder's path is too long."""
    mine = _ours.get(os.getpid())
    current = os.environ.get(VARIABLE)
    if current is not None and current != mine and not _is_ours(current):
        return None  # the user's
    if mine is None or not os.path.isdir(mine):
        remove_stale_folders()
        folder_chars = len(os.fsencode(tempfile.gettempdir())) + len(PREFIX) + NAME_EXTRA_CHARS
        if folder_chars > MAX_FOLDER_CHARS:
            return None
        mine = _ours[os.getpid()] = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        atexit.register(shutil.rmtree, mine, ignore_errors=True)
    os.environ[VARIABLE] = mine
    return mine


def _is_ours(path: str) -> bool:
    """A folder made here by some sigen process (inherited from a parent sigen, for one)."""
    folder = Path(path)
    return folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith(PREFIX)


def remove_stale_folders() -> list[Path]:
    """Remove the socket folders of sigen processes that no longer exist (this user's only);
    returns them."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = folder.name[len(PREFIX):].split("-", 1)[0]
        with contextlib.suppress(OSError):
            if not pid.isdigit() or folder.is_symlink() or not folder.is_dir() \
                    or folder.stat().st_uid != os.getuid() or _alive(int(pid)):
                continue
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process holds the id
    return True
