"""Replacing a file or a whole catalogue folder so that readers see the old or the new one, never neither."""

from __future__ import annotations

import ctypes
import os
import secrets
import stat
from pathlib import Path

from latentcat.errors import LatentcatError
from latentcat.limits import file_kind

def temporary_name(path: Path) -> Path:
    """A name beside ``path`` that no other writer uses: ``.NAME.tmp-PID-RANDOM`` (the random
    part keeps two workers on two hosts with one process id apart)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def check_replaceable(path: Path) -> None:
    """Refuse (LatentcatError naming it) a ``path`` that exists and is not a regular file: a
    folder, device node, FIFO, socket or symbolic link is never replaced by a file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise LatentcatError(f"{path}: is {file_kind(mode)}, not a regular file; not replaced")


def write_file(path: Path, write) -> None:
    """The one way latentcat writes a file: ``write(tmp)`` to a `temporary_name` beside
    ``path``, then rename it into place, so a reader sees the old file or the whole new one.

    The temporary file is removed if ``write`` fails or the process is stopped (Ctrl-C, or
    SIGTERM to the CLI). ``path`` must be a new name or a regular file: a folder, device node,
    FIFO, socket or symbolic link there is refused (LatentcatError naming it), never replaced.
    """
    path = Path(path)
    check_replaceable(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_in(new: Path, target: Path) -> None:
    """Put the folder ``new`` in place of ``target``; the old catalogue ends up at ``new``."""
    if exchange(new, target):
        return
    old = new.with_name(new.name + ".old")
    os.replace(target, old)
    os.replace(new, target)
    os.replace(old, new)
