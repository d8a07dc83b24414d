"""What made a catalogue or a model: the versions recorded next to it."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("latentcat", "numpy", "torch", "pyarrow", "duckdb", "faiss-cpu", "scikit-learn", "joblib",
            "gaiaxpy", "nifty-ls")


def software_versions() -> dict[str, str]:
    """Python's version and those of latentcat and the libraries whose behaviour shapes its results."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
