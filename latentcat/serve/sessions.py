"""The explorer's discovery sessions: one per browser, or one shared answers file.

A session (`latentcat.analysis.discover.Discovery`) is its answers alone: everything else it
holds is computed from them and from the catalogue. So each is kept as an answers file
(``source_id,interesting``, the file `latentcat discover --labels` reads) and in memory: a
browser's session in the explorer's sessions folder, named by its cookie, or, with
``latentcat serve --answers FILE``, that one file for everyone. Before a session is used, its
file is compared with what this process last read or wrote; when another explorer process
(``--workers``) has changed it, the session is rebuilt from the file. Every use holds a lock
(a thread lock, and an ``fcntl`` lock on the folder's lock file across processes), so two
answers given at once are both kept.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: one explorer process, the thread lock is enough
    fcntl = None

from latentcat.analysis.discover import Discovery, read_answers

MAX_SESSIONS = 16
"""Discovery sessions kept in memory (the least recently used dropped first; its file stays):
each holds two floats per source beside the vectors they share."""

KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")
"""What a session key (a browser's cookie) looks like."""

SHARED = "shared"


def _stamp(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class Sessions:
    """The discovery sessions of one explorer.

    Parameters
    ----------
    start : callable
        ``Catalog.discover``: makes the first session, once (from the answers file where there
        is one); every other session is a `Discovery.fresh` copy, sharing its vectors.
    answers : path, optional
        One answers file for everyone: resumed from when it exists, rewritten after every answer.
    folder : path, optional
        Where the browsers' sessions and the lock file are kept; by default a private
        temporary folder, removed by `close`. Explorer processes serving together share one.
    """

    def __init__(self, start, answers=None, folder=None):
        self._start = start
        self._first: Discovery | None = None
        self.answers_path = Path(answers) if answers is not None else None
        self._own_folder = folder is None
        self.folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="latentcat-sessions-"))
        self._kept: OrderedDict[str, tuple[Discovery, object]] = OrderedDict()
        self._lock = threading.Lock()
        if self.answers_path is not None and self.answers_path.exists():
            # resumed, checked against the catalogue: a bad answers file stops the start, in one line
            with self._locked():
                self._first = self._start(labels=self.answers_path)
                self._kept[SHARED] = (self._first, _stamp(self.answers_path))

    def close(self) -> None:
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, key: str | None) -> Path | None:
        if self.answers_path is not None:
            return self.answers_path
        return self.folder / f"{key}.csv" if key is not None and KEY.fullmatch(key) else None

    @contextmanager
    def _locked(self):
        with self._lock:
            if fcntl is None:
                yield
                return
            with open(self.folder / "lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def use(self, key: str | None, write: bool = False):
        """The session of a browser's ``key`` (the shared one with an answers file), up to date
        with its file, held alone for the ``with`` block; with ``write``, saved after it."""
        path = self._path(key)
        name = SHARED if self.answers_path is not None else (key or "")
        with self._locked():
            session, seen = self._kept.pop(name, (None, None))
            now = _stamp(path) if path is not None else None
            if session is None or now != seen:
                if self._first is None:
                    self._first = self._start()
                session = self._first.fresh()
                if now is not None:
                    for sid, interesting in read_answers(path).items():
                        session.skip(sid) if interesting is None else session.label(sid, interesting)
            self._kept[name] = (session, now)
            while len(self._kept) > MAX_SESSIONS:
                self._kept.popitem(last=False)
            yield session
            if write and path is not None:
                session.save(path)
                self._kept[name] = (session, _stamp(path))

    def answers(self, key: str | None) -> dict:
        """A copy of a browser's answers (empty before its session starts)."""
        path = self._path(key)
        if path is None or not path.exists():
            return {}
        with self.use(key) as session:
            return dict(session.answers)


def new_key() -> str:
    """A fresh session key (24 URL-safe characters)."""
    return secrets.token_urlsafe(18)
