"""Replacing a file or a whole catalogue folder so that readers see the old or the new one, never neither."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path


def write_file(path: Path, write) -> None:
    """``write(tmp)`` to a temporary name beside ``path`` (``.NAME.tmp-PID``), then rename it
    into place; the temporary file is removed if ``write`` fails."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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
