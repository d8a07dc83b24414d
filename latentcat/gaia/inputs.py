"""Finding the tables to read: folder walks, zip bundles, HATS catalogues, and each file's format.

:func:`find_inputs` expands files, folders and zip bundles into the
:class:`~latentcat.gaia.formats.InputFile` entries that :mod:`latentcat.gaia.formats` reads.
:func:`sniff_format` recognises a format from the file's first bytes (then its extension):
VOTable, ECSV, CSV, FITS and Parquet, each possibly gzipped, and ``.zip`` bundles such as
``astroquery.gaia.Gaia.load_data`` saves. HATS catalogues (the partitioned Parquet that LSDB
reads and writes) are expanded to their leaf files. The truth table of a simulated survey
(:func:`is_simulation_truth`) is never taken for an archive product, and
:func:`sampled_spectrum_kind` tells XP_SAMPLED from RVS sampled spectra.

What a table holds is recognised afterwards from its column names
(:func:`latentcat.gaia.layouts.detect_layout`), never from a file name.
"""

from __future__ import annotations

import gzip
import re
import zipfile
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from latentcat.errors import InputError
from latentcat.gaia.formats import InputFile, iter_batches
from latentcat.gaia.layouts import cast_column, input_error
from latentcat.limits import checked_path

#: File extensions (after an optional ``.gz``) that a folder walk picks up.
TABLE_SUFFIXES = {".xml": "votable", ".vot": "votable", ".votable": "votable", ".ecsv": "ecsv",
                  ".csv": "csv", ".fits": "fits", ".fit": "fits", ".parquet": "parquet", ".zip": "zip"}

#: Files that mark a HATS catalogue or collection folder.
HATS_MARKERS = ("collection.properties", "hats.properties", "properties", "catalog_info.json")

#: Files of a HATS ``dataset/`` folder that describe the leaves; never read.
HATS_METADATA = ("_metadata", "_common_metadata")

#: HATS catalogue types whose leaves hold rows of their own; margin, index, association and map
#: catalogues only repeat or point at the rows of a primary catalogue.
HATS_DATA_TYPES = ("object", "source")

#: Parquet metadata key and value that mark the truth table of a simulated survey
#: (`latentcat.gaia.simulate`): the answer key, not an archive product, so ingest skips it.
TRUTH_ROLE = (b"latentcat_role", b"simulation_truth")


def _head(path: Path, n: int = 4096) -> tuple[bytes, bool]:
    """Return the first ``n`` bytes of a file (decompressed when gzipped) and whether it was gzipped."""
    with open(path, "rb") as fh:
        raw = fh.read(n)
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read(n), True
        except (OSError, EOFError) as exc:
            raise input_error(str(path), f"corrupt gzip stream ({exc})") from None
    return raw, False


def sniff_format(path: Path, name: str | None = None) -> tuple[str, bool]:
    """Recognise a file's format from its first bytes, falling back to its extension.

    Parameters
    ----------
    path : Path
        The file.
    name : str, optional
        The name used in error messages (defaults to ``path``).

    Returns
    -------
    fmt : str
        ``zip``, ``votable``, ``ecsv``, ``csv``, ``fits`` or ``parquet``.
    gzipped : bool
        Whether the content is gzip-compressed.
    """
    name = name or str(path)
    if path.stat().st_size == 0:
        raise input_error(name, "empty file")
    head, gzipped = _head(path)
    if not head:
        raise input_error(name, "empty file (nothing inside the gzip stream)")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip", gzipped
    if head[:4] == b"PAR1":
        return "parquet", gzipped
    if head[:9] == b"SIMPLE  =":
        return "fits", gzipped
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<?xml") or text.startswith(b"<VOTABLE"):
        return "votable", gzipped
    if text.startswith(b"# %ECSV"):
        return "ecsv", gzipped
    suffixes = [s.lower() for s in Path(name).suffixes if s.lower() != ".gz"]
    ext = TABLE_SUFFIXES.get(suffixes[-1]) if suffixes else None
    if ext in (None, "csv") and b"\x00" not in head:
        return "csv", gzipped
    raise input_error(name, f"not a readable {ext or 'table'} file (unrecognised content)")


def find_inputs(inputs: list[Path], workdir: Path) -> tuple[list[InputFile], list[str]]:
    """Expand input paths into the tables to read.

    Folders are walked recursively (files with a table extension, hidden files skipped);
    zip bundles are extracted into ``workdir``, and so are gzipped Parquet and FITS files
    (their readers need to seek). Files named explicitly are always read.

    A HATS catalogue folder (``properties`` or ``hats.properties``, or the older
    ``catalog_info.json``), given or met in a walk, is expanded to its leaf Parquet files
    (``dataset/Norder=K/Dir=D/Npix=P`` with any suffix, such as ``.parquet`` or ``.parquet.gz``,
    or ``Npix=P/`` folders of files); its metadata, partition_info and skymap files are not
    read, and any other file in its ``dataset/`` folder is listed as ignored. A HATS collection
    (``collection.properties``) gives its primary catalogue; its margin and index catalogues only
    repeat or point at those rows and are listed as ignored.

    Parameters
    ----------
    inputs : list of Path
        Files, zip bundles and folders, in any mix.
    workdir : Path
        A scratch folder for extracted zip members.

    Returns
    -------
    files : list of InputFile
        The tables, in a deterministic order.
    ignored : list of str
        Files seen in folders but not read (unsupported extension, a simulated survey's
        truth table, or not a leaf of a HATS catalogue), and the HATS catalogues that hold no
        rows of their own.
    """
    files: list[InputFile] = []
    ignored: list[str] = []
    for given in inputs:
        given = checked_path(given)  # a file or a folder: never a device, FIFO or link loop
        if _is_hats_root(given):
            files.extend(_expand_hats(given, workdir, ignored, explicit=True))
        elif given.is_dir():
            roots = sorted(m.parent for m in given.rglob("*") if m.name in HATS_MARKERS and _is_hats_root(m.parent))
            roots = [r for r in roots if not any(o in r.parents for o in roots)]  # a collection holds catalogues
            for p in sorted({*roots, *given.rglob("*")}):
                if any(part.startswith(".") for part in p.relative_to(given).parts):
                    continue
                if p in roots:
                    files.extend(_expand_hats(p, workdir, ignored, explicit=False))
                    continue
                if not p.is_file() or any(r in p.parents for r in roots):
                    continue
                suffixes = [s.lower() for s in p.suffixes if s.lower() != ".gz"]
                if suffixes and suffixes[-1] in TABLE_SUFFIXES and not is_simulation_truth(p):
                    files.extend(_expand(p, str(p), str(p.parent), workdir))
                else:
                    ignored.append(str(p))
        elif is_simulation_truth(given):
            raise InputError(f"{given}: the truth table of a simulated survey, not an archive product; "
                             "ingest the survey's archive/ folder")
        else:
            files.extend(_expand(given, str(given), str(given.parent), workdir))
    return files, ignored


def is_simulation_truth(path: Path) -> bool:
    """Whether ``path`` is the truth table `latentcat simulate` writes beside its archive files
    (a Parquet file marked with the simulator's ``latentcat_role`` metadata)."""
    if path.suffix.lower() != ".parquet":
        return False
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return False
    return metadata.get(TRUTH_ROLE[0]) == TRUTH_ROLE[1]


def _is_hats_root(folder: Path) -> bool:
    """Whether a folder is a HATS collection, or a HATS catalogue with its partition folders."""
    if not folder.is_dir():
        return False
    if (folder / "collection.properties").is_file():
        return True
    marked = any((folder / m).is_file() for m in HATS_MARKERS[1:])
    return marked and ((folder / "dataset").is_dir() or any(folder.glob("Norder=*")))


def _hats_properties(root: Path) -> dict[str, str]:
    """The key = value pairs of a HATS properties file (or the older catalog_info.json)."""
    import json

    for name in HATS_MARKERS[:3]:
        if (root / name).is_file():
            lines = (root / name).read_text(errors="replace").splitlines()
            pairs = (line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))
            return {k.strip(): v.strip() for k, v in pairs}
    try:
        info = json.loads((root / "catalog_info.json").read_text())
    except (OSError, ValueError) as exc:
        raise input_error(str(root / "catalog_info.json"), f"unreadable HATS catalogue description ({exc})") from None
    return {"dataproduct_type": str(info.get("catalog_type", "")), **{k: str(v) for k, v in info.items()}}


def _expand_hats(root: Path, workdir: Path, ignored: list[str], explicit: bool) -> list[InputFile]:
    """The leaf Parquet files of a HATS catalogue (or of a collection's primary catalogue).

    Parameters
    ----------
    root : Path
        The catalogue or collection folder.
    workdir : Path
        Scratch folder (gzipped leaves are decompressed there).
    ignored : list of str
        Margin, index and other non-data catalogues met are appended here, and so is every
        file of the data folder that is neither a leaf nor :data:`HATS_METADATA`.
    explicit : bool
        Whether the user named this folder (a non-data catalogue is then an error).

    Returns
    -------
    list of InputFile
        One per leaf file, ordered by HEALPix order and pixel.
    """
    props = _hats_properties(root)
    if (root / "collection.properties").is_file():
        primary = props.get("hats_primary_table_url", "")
        if not primary or not _is_hats_root(root / primary):
            raise input_error(str(root / "collection.properties"),
                              "HATS collection without a readable primary catalogue "
                              f"(hats_primary_table_url={primary!r})")
        ignored.extend(str(p) for p in sorted(root.iterdir()) if p.is_dir() and p.name != primary
                       and not p.name.startswith("."))
        return _expand_hats(root / primary, workdir, ignored, explicit)
    kind = props.get("dataproduct_type", "object").lower() or "object"
    if kind not in HATS_DATA_TYPES:
        if explicit:
            raise input_error(str(root), f"a HATS {kind} catalogue holds no rows of its own; "
                                         "give its primary catalogue")
        ignored.append(str(root))
        return []
    data = root / "dataset" if (root / "dataset").is_dir() else root
    leaves = []
    for path in sorted(data.rglob("*")):
        rel = path.relative_to(data)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.as_posix() in HATS_METADATA or (data == root and not rel.parts[0].startswith("Norder=")):
            continue  # the catalogue's own metadata (at its root too in the older layout without dataset/)
        # a leaf file Npix=P<any suffix> (.parquet, .parquet.gz, .snappy.parquet), or a file in an Npix=P/ folder
        m = re.fullmatch(r"Norder=(\d+)/Dir=\d+/Npix=(\d+)([./].*)?", rel.as_posix())
        if m is None or path.name.startswith("_"):
            ignored.append(str(path))
            continue
        leaves.append(((int(m.group(1)), int(m.group(2)), str(path)), path))
    if not leaves:
        raise input_error(str(root), f"HATS catalogue without leaf files (no {data.name}/Norder=*/Dir=*/Npix=* found)")
    files = []
    for _, leaf in sorted(leaves):
        for f in _expand(leaf, str(leaf), str(root), workdir):
            if f.fmt != "parquet":
                raise input_error(f.name, f"HATS leaf is not Parquet ({f.fmt})")
            f.hats = True
            files.append(f)
    return files


def _expand(path: Path, name: str, bundle: str, workdir: Path) -> list[InputFile]:
    """Turn one file into InputFiles (a zip bundle gives one per member)."""
    fmt, gzipped = sniff_format(path, name)
    if fmt != "zip":
        return [_decompress(InputFile(path, name, fmt, gzipped, bundle), workdir)]
    if gzipped:
        raise input_error(name, "a gzipped zip bundle is not supported; unzip it first")
    dest = workdir / f"zip{len(list(workdir.glob('zip*'))):05d}"
    out: list[InputFile] = []
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise input_error(name, f"corrupt zip bundle (bad CRC in member {bad})")
            for i, info in enumerate(sorted(zf.infolist(), key=lambda m: m.filename)):
                if info.is_dir():
                    continue
                target = dest / f"{i:05d}{Path(info.filename).suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 22):
                        dst.write(chunk)
                member = f"{name}:{info.filename}"
                out.append(_decompress(InputFile(target, member, *sniff_format(target, member), bundle=name),
                                       workdir))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError) as exc:
        raise input_error(name, f"corrupt zip bundle ({exc})") from None
    if any(f.fmt == "zip" for f in out):
        raise input_error(name, "zip bundles inside zip bundles are not supported")
    return out


def _decompress(f: InputFile, workdir: Path) -> InputFile:
    """Return an InputFile whose bytes are uncompressed on disk where a reader needs a seekable file.

    Parameters
    ----------
    f : InputFile
        The table, possibly gzipped.
    workdir : Path
        Scratch folder for the decompressed copy.

    Returns
    -------
    InputFile
        ``f`` itself for streamable formats, or an uncompressed copy for Parquet and FITS.
    """
    if not f.gzipped or f.fmt in ("csv", "ecsv", "votable"):
        return f
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / f"plain{len(list(workdir.glob('plain*'))):05d}.{f.fmt}"
    try:
        with gzip.open(f.path, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
    except (OSError, EOFError) as exc:
        raise input_error(f.name, f"truncated or corrupt gzip stream ({exc})") from None
    return InputFile(target, f.name, f.fmt, False, f.bundle)


def sampled_spectrum_kind(f: InputFile) -> str:
    """Tell XP_SAMPLED (336-1020 nm) from RVS (846-870 nm) sampled spectra by their wavelengths.

    Parameters
    ----------
    f : InputFile
        A table with wavelength, flux and flux_error columns.

    Returns
    -------
    str
        ``XP_SAMPLED`` or ``RVS``.
    """
    for batch in iter_batches(f, 100_000, ["wavelength"]):
        wl = cast_column(batch, "wavelength", pa.float64(), f.name)
        lo = pc.min(wl).as_py()
        return "RVS" if lo is not None and lo > 800 else "XP_SAMPLED"
    return "XP_SAMPLED"
