"""Every bound latentcat puts on what a user sends it, defined once, with the checks that apply them.

A catalogue may be queried by people its owner does not trust, and a careless upload can be as
costly as a hostile one, so each input is checked against these bounds before any work is done,
and a refusal is one line naming the file, row or value. This module imports nothing heavy: the
CLI reads its defaults at start-up.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from latentcat.errors import InputError, LatentcatError

# ------------------------------------------------------------------ queries on an open catalogue

TIMEOUT = 60.0
"""Seconds a query sent to a Catalog (`Catalog.sql`, a ``where`` filter) may run by default
before it is interrupted (``latentcat.open(..., timeout=...)``, ``--timeout``; None: no limit)."""

SERVE_TIMEOUT = 10.0
"""The explorer's default for the same limit (``latentcat serve --timeout``)."""

MEMORY_LIMIT_MIB = 4096
"""Default memory limit of a Catalog (``latentcat.open(..., memory_limit_mib=...)``): DuckDB's
working memory for its queries (nothing spills to disk: a query that needs more fails with
DuckDB's out-of-memory error) and the largest answer `Catalog.sql` returns."""

MAX_K = 10_000
"""Most neighbours one `Catalog.similar` call returns per query (and most rows of `Catalog.like`)."""

MAX_PAGE_ROWS = 100
"""Most rows an explorer page lists (neighbours, outliers, answers): each row draws a thumbnail."""

MAX_SELECTION_ROWS = 100_000
"""Most sources a map selection downloads (CSV or Parquet) in the explorer."""

MAX_LIKE_MEMBERS = 2_000
"""Most members of a map selection that "more like these" uses (an even sample by source_id
beyond): `Catalog.like` compares every catalogue source with every member."""

# ------------------------------------------------------------------ new sources (by example, add)

MAX_EPOCHS = 2_000
"""Most G epochs of one light curve sent to `latentcat.encode` (``similar --from-file``, an
upload). Gaia DR3 G light curves hold at most ~270 epochs and DR4's will hold about twice as
many; the dm-dt map of n epochs costs n(n-1)/2 pairs."""

TIME_RANGE = (-40_000.0, 40_000.0)
"""Gaia times (BJD - 2455197.5 d) a light curve's epochs may take: about 1900 to 2120 AD."""

MAG_RANGE = (-2.0, 30.0)
"""G magnitudes a light curve may hold (Sirius is G = -1.5; Gaia reaches G = 21)."""

MAG_ERR_MAX = 10.0
"""Largest G magnitude error accepted (mag); an error must also be positive."""

MAX_QUERY_FILE_BYTES = 64 << 20
"""Largest file ``similar --from-file`` reads (64 MiB: a DataLink bundle of one source is ~1 MiB)."""

MAX_UPLOAD_BYTES = 5 << 20
"""The explorer's default cap on an uploaded file (``latentcat serve --max-upload-mb``)."""

MAX_IDS_FILE_BYTES = 1 << 30
"""Largest file of source_ids read by ``similar --ids-file`` and ``like --ids`` (1 GiB)."""

# ------------------------------------------------------------------ checks

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` is, in words ("a FIFO", "a folder", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def checked_path(path: str | Path, folders: bool = True) -> Path:
    """``path`` (as given), refused unless it is, symbolic links followed, a regular file or, with
    ``folders``, a folder: a device node, FIFO or socket would be read without end.

    Raises
    ------
    InputError
        One line naming the path: missing, a symbolic-link loop, or not a file (or folder).
    """
    given = Path(path)
    try:
        mode = os.stat(given).st_mode
    except FileNotFoundError:
        raise InputError(f"{given}: no such file or folder") from None
    except OSError as err:  # ELOOP, EACCES, ENAMETOOLONG...
        raise InputError(f"{given}: cannot be read ({err.strerror})") from None
    if stat.S_ISREG(mode) or (folders and stat.S_ISDIR(mode)):
        return given
    raise InputError(f"{given}: is {file_kind(mode)}; give a regular file" + (" or a folder" if folders else ""))


def checked_input_file(path: str | Path, max_bytes: int, what: str = "input file") -> Path:
    """``path`` if it is a regular file of at most ``max_bytes``, checked before it is opened.

    Raises
    ------
    InputError
        One line naming the file: missing, a symbolic-link loop, not a regular file, or too large.
    """
    path = checked_path(path, folders=False)
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{path}: {size / 2**20:,.1f} MiB, larger than the {max_bytes / 2**20:,.0f} MiB "
                         f"allowed for {what}")
    return path


MAX_SOURCE_ID = 2**63 - 1
"""The largest value a source_id column (int64) holds."""


def as_source_id(value, where: str = "") -> int:
    """``value`` (an int or its text) as a source_id: a whole number from 0 to 2**63 - 1.

    Raises
    ------
    LatentcatError
        One line naming ``where`` (e.g. ``ids.txt line 3``) and the value.
    """
    at = f"{where}: " if where else ""
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise LatentcatError(f"{at}not a source_id: {str(value)[:40]!r}") from None
    if not 0 <= number <= MAX_SOURCE_ID:
        raise LatentcatError(f"{at}{str(number)[:40]} is not a source_id (a whole number from 0 to 2**63 - 1)")
    return number
