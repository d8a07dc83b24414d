"""latentcat: a similarity-search catalogue of Gaia variable sources.

Each source is compressed to 15 numbers by three variational autoencoders (XP spectrum,
dm-dt map, folded G light curve), following Huijse et al. 2025 (A&A 701, A150).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("latentcat")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["Catalog", "__version__", "open"]


def __getattr__(name: str):
    """``latentcat.open`` and ``latentcat.Catalog``, imported on first use so the CLI starts fast."""
    if name in ("open", "Catalog"):
        from latentcat import query

        return getattr(query, name)
    raise AttributeError(f"module 'latentcat' has no attribute {name!r}")
