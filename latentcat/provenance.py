"""What made a catalogue or a model: the versions recorded next to it."""

from __future__ import annotations

import hashlib
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from latentcat.limits import checked_path

PACKAGES = ("latentcat", "numpy", "torch", "pyarrow", "duckdb", "faiss-cpu", "scikit-learn", "joblib",
            "gaiaxpy", "finufft")


def software_versions() -> dict[str, str]:
    """Python's version and those of latentcat and the libraries whose behaviour shapes its results."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _input_files(paths: list[Path]) -> list[Path]:
    """The regular files under ``paths``; a given path that is neither a file nor a folder (a
    device, a FIFO, a symbolic-link loop) is refused (`latentcat.limits.checked_path`)."""
    files: list[Path] = []
    for p in paths:
        p = checked_path(p)
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    return files


def input_checksums(paths: list[Path]) -> dict[str, dict]:
    """Size and SHA-256 of every file under ``paths``: how a catalogue says what it was made from."""
    return {str(f): {"bytes": f.stat().st_size, "sha256": _sha256(f)} for f in _input_files(paths)}


def input_fingerprint(paths: list[Path]) -> dict[str, list[int]]:
    """Size and modification time (ns) of every file under ``paths``: what a resumed build
    checks its inputs against (cheap at any size; the catalogue records full checksums)."""
    return {str(f): [f.stat().st_size, f.stat().st_mtime_ns] for f in _input_files(paths)}
