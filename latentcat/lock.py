"""One writer at a time: the lock that every command writing into a catalogue holds.

``latentcat add``, ``build``, ``classify`` and ``outliers`` each read the catalogue, compute, and
write (or swap in) a new version of it. Two of them at once would each start from the same old
catalogue and the second to finish would throw the first one's work away, so each holds the
catalogue's writer lock from its first read to its last write. A second writer waits until the
first has finished (saying once, on stderr, whom it waits for) and then reads the catalogue the
first one left. Readers take no lock: they keep the snapshot they opened.

The lock is an advisory ``flock`` on the file ``.<name>.lock`` beside the catalogue folder (the
folder itself is swapped whole by ``add`` and ``build``, so the lock cannot live inside it). The
operating system releases it when its holder exits, killed or not; the file records the holder
(process id, command, start time) for the waiting message and is left in place.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from latentcat.errors import LatentcatError

def lock_path(cat_dir: Path) -> Path:
    """The writer-lock file of a catalogue folder: ``.<name>.lock`` beside it, symbolic links
    followed, so every name of one catalogue locks the same file."""
    try:
        cat_dir = Path(cat_dir).resolve()
    except (OSError, RuntimeError):  # a symbolic-link loop: the path as given
        cat_dir = Path(cat_dir).absolute()
    return cat_dir.parent / f".{cat_dir.name}.lock"


def holder(path: Path) -> str:
    """Who holds a lock file, in words (as its holder recorded it)."""
    try:
        record = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        record = {}
    if not record:
        return "another process"
    return f"process {record.get('pid')} ({record.get('command')}, since {record.get('since')})"


@contextmanager
def writer_lock(cat_dir: Path, command: str, wait: bool = True):
    """Hold the writer lock of the catalogue folder ``cat_dir`` for the ``with`` block.

    Parameters
    ----------
    cat_dir : Path
        The catalogue folder (it need not exist yet: a first build locks it too).
    command : str
        What this process does, recorded for whoever waits (e.g. ``"latentcat add"``).
    wait : bool
        Wait while another process writes the catalogue (default); False: fail at once.

    Raises
    ------
    LatentcatError
        ``wait=False`` and another process holds the lock (the message names it), or the lock
        file cannot be created (no permission to write beside the catalogue).
    """
    path = lock_path(cat_dir)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise LatentcatError(f"{path}: cannot create the catalogue's writer lock ({err.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(path)
            if not wait:
                raise LatentcatError(f"{Path(cat_dir)}: being written by {who}; try again when it has finished") from None
            print(f"waiting: {Path(cat_dir)} is being written by {who}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        record = {"pid": os.getpid(), "command": command, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
