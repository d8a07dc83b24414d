"""Errors latentcat reports to users as one clear line."""


class LatentcatError(Exception):
    """A user-facing error: the message is one line naming the file, row or source at fault."""


class InputError(LatentcatError):
    """An input file is unreadable, truncated, of an unknown layout or has bad values."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line (DuckDB and others print several)."""
    return " ".join(str(err).split())
