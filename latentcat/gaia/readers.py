"""Readers for Gaia DR3 archive products: one format in, Arrow batches out.

A reader never decides what a table *means*; it finds the input files, reads them in
bounded batches and turns each batch into one of a few canonical Arrow shapes:

* :func:`epoch_points` - one row per (source, band, transit) point with its rejection flags,
  from any of the three epoch-photometry layouts;
* :func:`xp_coefficients` - XP continuous mean spectra, one row per source;
* :func:`source_columns` / :func:`label_columns` - ``gaia_source`` columns and classes.

Formats are recognised from the file's first bytes (then its extension): VOTable, ECSV,
CSV, FITS and Parquet, each possibly gzipped, and ``.zip`` bundles such as
``astroquery.gaia.Gaia.load_data`` saves. Layouts are recognised from the column names only
(:func:`detect_layout`), never from a file name.

HATS catalogues (the partitioned Parquet that LSDB reads and writes) are expanded to their leaf
files, each read like any other Parquet file. A nested light-curve column (``list<struct>``, or
the ``struct<list>`` form nested-pandas writes) is read as one list column per per-epoch field, one
row per source: per-band field names (``g_transit_time``, ...) give the bulk array layout, DataLink
names (``band``, ``time``, ``mag``, ...) the long layout, which :func:`epoch_points` explodes to one
row per epoch.

Memory: Parquet is read by record batches and CSV/ECSV by byte blocks, so memory follows the
batch size, not the file size. VOTable and FITS are parsed whole by astropy (the archive
serves them per DataLink request, at most 5000 sources each) and then sliced into batches.
"""

from __future__ import annotations

import gzip
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from latentcat.errors import InputError
from latentcat.gaia.source_ids import MAX_SOURCE_ID

#: 2.5 / ln(10): converts a relative flux error into a magnitude error.
MAG_ERR_FACTOR = 2.5 / np.log(10.0)

#: Band codes used in the point tables (G, BP, RP).
BANDS = ("G", "BP", "RP")

#: File extensions (after an optional ``.gz``) that a folder walk picks up.
TABLE_SUFFIXES = {".xml": "votable", ".vot": "votable", ".votable": "votable", ".ecsv": "ecsv",
                  ".csv": "csv", ".fits": "fits", ".fit": "fits", ".parquet": "parquet", ".zip": "zip"}

#: Wide (epoch_photometry table) column names per band: time, mag, flux, flux error, variability flag.
WIDE_BANDS = {
    "G": ("g_transit_time", "g_transit_mag", "g_transit_flux", "g_transit_flux_error", "variability_flag_g_reject"),
    "BP": ("bp_obs_time", "bp_mag", "bp_flux", "bp_flux_error", "variability_flag_bp_reject"),
    "RP": ("rp_obs_time", "rp_mag", "rp_flux", "rp_flux_error", "variability_flag_rp_reject"),
}

#: Gaia DR3 ``gaia_source`` columns kept in ``sources.parquet``, with their archive types.
GAIA_SOURCE_COLUMNS: dict[str, pa.DataType] = {
    **{c: pa.float64() for c in (
        "ra", "dec", "parallax", "pmra", "pmdec", "l", "b", "ecl_lon", "ecl_lat", "ref_epoch",
        "phot_g_mean_flux", "phot_bp_mean_flux", "phot_rp_mean_flux",
        "phot_g_mean_flux_error", "phot_bp_mean_flux_error", "phot_rp_mean_flux_error")},
    **{c: pa.float32() for c in (
        "ra_error", "dec_error", "parallax_error", "parallax_over_error", "pm", "pmra_error", "pmdec_error",
        "ruwe", "astrometric_excess_noise", "astrometric_excess_noise_sig", "astrometric_chi2_al",
        "nu_eff_used_in_astrometry", "pseudocolour", "ipd_frac_multi_peak", "ipd_gof_harmonic_amplitude",
        "phot_g_mean_flux_over_error", "phot_bp_mean_flux_over_error", "phot_rp_mean_flux_over_error",
        "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag", "phot_bp_rp_excess_factor",
        "bp_rp", "bp_g", "g_rp", "radial_velocity", "radial_velocity_error", "rv_template_teff",
        "vbroad", "vbroad_error", "grvs_mag", "grvs_mag_error",
        "classprob_dsc_combmod_quasar", "classprob_dsc_combmod_galaxy", "classprob_dsc_combmod_star",
        "teff_gspphot", "logg_gspphot", "mh_gspphot", "distance_gspphot", "azero_gspphot",
        "ag_gspphot", "ebpminrp_gspphot")},
    **{c: pa.int16() for c in (
        "astrometric_n_obs_al", "astrometric_n_good_obs_al", "astrometric_params_solved",
        "visibility_periods_used", "phot_g_n_obs", "phot_bp_n_obs", "phot_rp_n_obs",
        "rv_nb_transits", "ipd_multi_peak")},
    **{c: pa.bool_() for c in (
        "duplicated_source", "has_xp_continuous", "has_xp_sampled", "has_rvs", "has_epoch_photometry",
        "has_epoch_rv", "has_mcmc_gspphot", "has_mcmc_msc", "in_qso_candidates", "in_galaxy_candidates",
        "in_andromeda_survey")},
    **{c: pa.string() for c in ("designation", "phot_variable_flag", "libname_gspphot")},
    "random_index": pa.int64(),
}

#: Class columns accepted for ``labels.parquet`` (first match wins) and their score columns.
CLASS_COLUMNS = ("best_class_name", "class_name", "class", "label")
SCORE_COLUMNS = ("best_class_score", "class_score", "score")

#: XP continuous columns and their canonical types.
XP_COLUMNS: dict[str, pa.DataType] = {"source_id": pa.int64()}
for _band in ("bp", "rp"):
    XP_COLUMNS.update({
        f"{_band}_coefficients": pa.list_(pa.float64()),
        f"{_band}_coefficient_errors": pa.list_(pa.float32()),
        f"{_band}_coefficient_correlations": pa.list_(pa.float32()),
        f"{_band}_n_relevant_bases": pa.int16(),
        f"{_band}_standard_deviation": pa.float32(),
    })

#: Columns a HATS leaf carries for its partitioning (``_hipscat_index``: the older name); never read.
HATS_COLUMNS = ("_healpix_29", "_hipscat_index", "norder", "dir", "npix")

#: Files of a HATS ``dataset/`` folder that describe the leaves; never read.
HATS_METADATA = ("_metadata", "_common_metadata")

#: HATS catalogue types whose leaves hold rows of their own; margin, index, association and map
#: catalogues only repeat or point at the rows of a primary catalogue.
HATS_DATA_TYPES = ("object", "source")

#: A nested light-curve row counts as this many epochs against ``batch_rows`` when it is exploded
#: to one row per epoch (a DR3 source has some 40-300 G, BP and RP epochs).
NESTED_ROW_WEIGHT = 100

#: The layouts :func:`detect_layout` knows, with what each one needs (for error messages).
LAYOUTS = {
    "epoch_long": "DataLink epoch photometry (source_id, band, time, mag, flux, flux_error)",
    "epoch_wide": "epoch_photometry per transit or bulk arrays (source_id, g_transit_time, g_transit_mag, "
                  "g_transit_flux, g_transit_flux_error)",
    "xp_continuous": "XP continuous spectra (source_id, bp_coefficients and/or rp_coefficients)",
    "sources": "gaia_source columns (source_id plus ra, dec, phot_g_mean_mag, bp_rp, parallax, ...)",
    "labels": "classes (source_id plus best_class_name or class)",
}


@dataclass
class InputFile:
    """One table to read: a file on disk, or a member of a zip bundle extracted to disk.

    Attributes
    ----------
    path : Path
        Where the bytes are now (gzip is kept only for text formats and VOTable).
    name : str
        How messages and the report call it (``bundle.zip:member.csv`` for zip members).
    fmt : str
        ``votable``, ``ecsv``, ``csv``, ``fits`` or ``parquet``.
    gzipped : bool
        Whether the bytes are gzip-compressed.
    bundle : str
        The zip file or folder the file sits in (used to pair XP_SAMPLED with XP_CONTINUOUS);
        for a HATS leaf, the catalogue folder.
    hats : bool
        Whether the file is a HATS leaf (its :data:`HATS_COLUMNS` are dropped).
    """

    path: Path
    name: str
    fmt: str
    gzipped: bool
    bundle: str
    hats: bool = False


def _fail(name: str, what: str) -> InputError:
    """Build a one-line InputError naming the file."""
    what = " ".join(str(what).split())
    return InputError(f"{name}: {what}")


def _head(path: Path, n: int = 4096) -> tuple[bytes, bool]:
    """Return the first ``n`` bytes of a file (decompressed when gzipped) and whether it was gzipped."""
    with open(path, "rb") as fh:
        raw = fh.read(n)
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read(n), True
        except (OSError, EOFError) as exc:
            raise _fail(str(path), f"corrupt gzip stream ({exc})") from None
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
        raise _fail(name, "empty file")
    head, gzipped = _head(path)
    if not head:
        raise _fail(name, "empty file (nothing inside the gzip stream)")
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
    raise _fail(name, f"not a readable {ext or 'table'} file (unrecognised content)")


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
        given = Path(given)
        if not given.exists():
            raise InputError(f"{given}: no such file or folder")
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


#: Parquet metadata key and value that mark the truth table of a simulated survey
#: (`latentcat.gaia.simulate`): the answer key, not an archive product, so ingest skips it.
TRUTH_ROLE = (b"latentcat_role", b"simulation_truth")


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


#: Files that mark a HATS catalogue or collection folder.
HATS_MARKERS = ("collection.properties", "hats.properties", "properties", "catalog_info.json")


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
        raise _fail(str(root / "catalog_info.json"), f"unreadable HATS catalogue description ({exc})") from None
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
            raise _fail(str(root / "collection.properties"),
                        f"HATS collection without a readable primary catalogue (hats_primary_table_url={primary!r})")
        ignored.extend(str(p) for p in sorted(root.iterdir()) if p.is_dir() and p.name != primary
                       and not p.name.startswith("."))
        return _expand_hats(root / primary, workdir, ignored, explicit)
    kind = props.get("dataproduct_type", "object").lower() or "object"
    if kind not in HATS_DATA_TYPES:
        if explicit:
            raise _fail(str(root), f"a HATS {kind} catalogue holds no rows of its own; give its primary catalogue")
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
        raise _fail(str(root), f"HATS catalogue without leaf files (no {data.name}/Norder=*/Dir=*/Npix=* found)")
    files = []
    for _, leaf in sorted(leaves):
        for f in _expand(leaf, str(leaf), str(root), workdir):
            if f.fmt != "parquet":
                raise _fail(f.name, f"HATS leaf is not Parquet ({f.fmt})")
            f.hats = True
            files.append(f)
    return files


def _expand(path: Path, name: str, bundle: str, workdir: Path) -> list[InputFile]:
    """Turn one file into InputFiles (a zip bundle gives one per member)."""
    fmt, gzipped = sniff_format(path, name)
    if fmt != "zip":
        return [_decompress(InputFile(path, name, fmt, gzipped, bundle), workdir)]
    if gzipped:
        raise _fail(name, "a gzipped zip bundle is not supported; unzip it first")
    dest = workdir / f"zip{len(list(workdir.glob('zip*'))):05d}"
    out: list[InputFile] = []
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise _fail(name, f"corrupt zip bundle (bad CRC in member {bad})")
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
        raise _fail(name, f"corrupt zip bundle ({exc})") from None
    if any(f.fmt == "zip" for f in out):
        raise _fail(name, "zip bundles inside zip bundles are not supported")
    return out


# --------------------------------------------------------------------------- header and layout


def read_columns(f: InputFile) -> list[str]:
    """Return a table's column names without reading its rows.

    Parameters
    ----------
    f : InputFile
        The table.

    Returns
    -------
    list of str
        Column names, lower-cased as the archive spells them.
    """
    try:
        if f.fmt == "parquet":
            return [c for c, _ in _parquet_plan(pq.read_schema(f.path), f)]
        if f.fmt in ("csv", "ecsv"):
            skip, delim = _text_header(f)
            with _text_stream(f) as fh:
                for _ in range(skip):
                    fh.readline()
                line = fh.readline().decode("utf-8", "replace").strip()
            if not line:
                raise _fail(f.name, "no header row (empty table)")
            return [c.strip().lower() for c in _split_header(line, delim)]
        if f.fmt == "votable":
            with _text_stream(f) as fh:
                head = b""
                while (chunk := fh.read(1 << 16)) and not re.search(rb"<(TABLEDATA|BINARY2?|FITS)\b", head):
                    head += chunk
            names = re.findall(rb"<FIELD\b[^>]*?\bname\s*=\s*\"([^\"]+)\"", head)
            if not names:
                raise _fail(f.name, "VOTable without any FIELD (truncated or not a table)")
            return [n.decode().lower() for n in names]
        if f.fmt == "fits":
            from astropy.io import fits

            with fits.open(f.path) as hdul:
                for hdu in hdul[1:]:
                    if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                        return [c.lower() for c in hdu.columns.names]
            raise _fail(f.name, "FITS file without a table extension")
    except InputError:
        raise
    except Exception as exc:  # a reader library's own error: report it as one line
        raise _fail(f.name, f"cannot read {f.fmt} header ({exc})") from None
    raise _fail(f.name, f"unsupported format {f.fmt}")


def _split_header(line: str, delim: str) -> list[str]:
    """Split a CSV header row, honouring quotes."""
    import csv

    return next(csv.reader([line], delimiter=delim))


def detect_layout(columns: list[str]) -> set[str]:
    """Recognise what a table holds from its column names.

    Parameters
    ----------
    columns : list of str
        Lower-case column names.

    Returns
    -------
    set of str
        One of ``{"epoch_long"}``, ``{"epoch_wide"}`` (either with ``"sources"`` when the
        table also has gaia_source columns, as a light-curve catalogue with ra/dec does),
        ``{"xp_continuous"}``, ``{"xp_sampled"}``, ``{"datalink_other"}``, or a non-empty
        subset of ``{"sources", "labels"}`` (a table may feed both). Empty when nothing matches.
    """
    cols = set(columns)
    if {"wavelength", "flux", "flux_error"} <= cols:
        return {"xp_sampled"}
    if {"log_pos", "log_lik"} <= cols:  # MCMC_GSPPHOT / MCMC_MSC samples
        return {"datalink_other"}
    if "source_id" not in cols:
        return set()
    sources = {"sources"} if cols & GAIA_SOURCE_COLUMNS.keys() else set()
    if {"band", "time", "mag"} <= cols and ({"flux", "flux_error"} <= cols or "mag_err" in cols):
        return {"epoch_long"} | sources
    if set(WIDE_BANDS["G"][:4]) <= cols:
        return {"epoch_wide"} | sources
    if "bp_coefficients" in cols or "rp_coefficients" in cols:
        return {"xp_continuous"}
    found = set()
    if cols & GAIA_SOURCE_COLUMNS.keys():
        found.add("sources")
    if cols & set(CLASS_COLUMNS):
        found.add("labels")
    return found


def unknown_layout_message(columns: list[str]) -> str:
    """The one-line explanation for a table no layout matches."""
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    expected = "; ".join(LAYOUTS.values())
    return f"unknown layout (columns: {shown}); expected one of: {expected}"


# --------------------------------------------------------------------------- batches


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
        raise _fail(f.name, f"truncated or corrupt gzip stream ({exc})") from None
    return InputFile(target, f.name, f.fmt, False, f.bundle)


def _text_stream(f: InputFile):
    """Open a text table as a binary stream, decompressing gzip on the fly."""
    return gzip.open(f.path, "rb") if f.gzipped else open(f.path, "rb")


def _text_header(f: InputFile) -> tuple[int, str]:
    """Count the leading ``#`` comment lines and find the delimiter (ECSV declares it)."""
    skip, delim = 0, ","
    with _text_stream(f) as fh:
        for raw in fh:
            line = raw.decode("utf-8", "replace")
            if not line.startswith("#"):
                break
            skip += 1
            m = re.match(r"#\s*delimiter:\s*'(.)'", line)
            if m:
                delim = m.group(1)
    if f.fmt == "ecsv" and skip and delim == ",":
        # ECSV's default delimiter is a space unless the header says otherwise
        with _text_stream(f) as fh:
            header = b"".join(fh.readline() for _ in range(skip)).decode("utf-8", "replace")
        if "delimiter:" not in header:
            delim = " "
    return skip, delim


def iter_batches(f: InputFile, batch_rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Read a table in batches of about ``batch_rows`` rows, with lower-case column names.

    CSV and ECSV columns come back as text (empty, ``null`` and ``NaN`` cells as nulls);
    callers cast them with :func:`cast_column`, which names the column and row that fail.

    Parameters
    ----------
    f : InputFile
        The table (gzipped Parquet and FITS were decompressed by :func:`find_inputs`).
    batch_rows : int
        Rows per batch (CSV/ECSV: the byte block is sized from it).
    columns : list of str, optional
        Only these columns (lower-case) are kept.

    Yields
    ------
    pyarrow.Table
    """
    try:
        if f.fmt == "parquet":
            yield from _parquet_batches(f, batch_rows, columns)
        elif f.fmt in ("csv", "ecsv"):
            yield from _csv_batches(f, batch_rows, columns)
        else:
            table = _astropy_table(f, columns)
            if table.num_rows == 0:
                return
            for start in range(0, table.num_rows, max(1, batch_rows)):
                yield table.slice(start, batch_rows)
    except InputError:
        raise
    except Exception as exc:
        raise _fail(f.name, f"cannot read {f.fmt} (truncated or corrupt?): {exc}") from None


def _lower(table: pa.Table) -> pa.Table:
    return table.rename_columns([c.lower() for c in table.column_names])


def _nested_fields(typ: pa.DataType) -> list[str] | None:
    """Per-epoch field names of a nested light-curve column type, or None for any other type.

    Two physical forms: ``list<struct<time, mag, ...>>`` and nested-pandas' ``struct<time: list,
    mag: list, ...>``.
    """
    if (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and pa.types.is_struct(typ.value_type):
        return [typ.value_type.field(i).name for i in range(typ.value_type.num_fields)]
    if pa.types.is_struct(typ) and typ.num_fields and all(
            pa.types.is_list(typ.field(i).type) or pa.types.is_large_list(typ.field(i).type)
            for i in range(typ.num_fields)):
        return [typ.field(i).name for i in range(typ.num_fields)]
    return None


def _parquet_plan(schema: pa.Schema, f: InputFile) -> list[tuple[str, tuple[str, str | None]]]:
    """The columns a Parquet file offers: ``(lower-case name, (top-level column, nested field or None))``.

    Nested fields take the place of their column; a field that repeats a top-level column name
    is left out (the top-level column wins), and :data:`HATS_COLUMNS` of a HATS leaf are dropped.
    """
    plan = [(n.lower(), (n, None)) for n in schema.names if _nested_fields(schema.field(n).type) is None]
    top, nested = {c for c, _ in plan}, {}
    for name in schema.names:
        for field in _nested_fields(schema.field(name).type) or []:
            key = field.lower()
            if key in nested:
                raise _fail(f.name, f"nested columns {nested[key]!r} and {name!r} both have a field {field!r}")
            if key not in top:
                nested[key] = name
                plan.append((key, (name, field)))
    if f.hats:
        plan = [p for p in plan if p[0] not in HATS_COLUMNS]
    return plan


def _parquet_batches(f: InputFile, batch_rows: int, columns: list[str] | None) -> Iterator[pa.Table]:
    """Read Parquet by record batches; nested columns come out as one list column per field.

    When the fields of the nested columns make the long (DataLink) layout, a batch holds one
    source row per :data:`NESTED_ROW_WEIGHT` of ``batch_rows`` (:func:`epoch_points` explodes
    them to one row per epoch).
    """
    pf = pq.ParquetFile(f.path, pre_buffer=False)  # pre-buffering keeps every batch's buffers alive
    plan = _parquet_plan(pf.schema_arrow, f)
    wanted = [(c, src) for c, src in plan if columns is None or c in columns]
    if all(field is None for _, (_, field) in plan):
        names = [n for _, (n, _) in wanted]
        for batch in pf.iter_batches(batch_size=max(1, batch_rows), columns=names):
            yield _lower(pa.Table.from_batches([batch]))
        return
    explode = "epoch_long" in detect_layout([c for c, _ in plan])
    fields = {(n, field) for _, (n, field) in wanted}
    paths = []  # Parquet leaf columns: a nested column's unused fields are not read
    for column in pf.schema:
        top, *rest = column.path.split(".")
        if (top, None) in fields or any((top, part) in fields for part in rest):
            paths.append(column.path)
    size = max(1, batch_rows // NESTED_ROW_WEIGHT) if explode else max(1, batch_rows)
    for batch in pf.iter_batches(batch_size=size, columns=paths):
        out = {}
        for c, (n, field) in wanted:
            col = batch.column(n)
            out[c] = col if field is None else _nested_field_lists(col, field)
        yield pa.table(out)


def _nested_field_lists(col: pa.Array, field: str) -> pa.Array:
    """One field of a nested column as a list column (a null row gives a null list)."""
    if pa.types.is_struct(col.type):  # nested-pandas: struct of lists
        return col.flatten()[col.type.get_field_index(field)]
    values = col.values.flatten()[col.type.value_type.get_field_index(field)]
    make = pa.LargeListArray if pa.types.is_large_list(col.type) else pa.ListArray
    return make.from_arrays(col.offsets, values, mask=col.is_null() if col.null_count else None)


def _explode_nested(table: pa.Table, name: str, row0: int) -> pa.Table:
    """Rows of a nested long-layout light curve (one per source, per-epoch list columns) -> one row
    per epoch, the other columns repeated, plus the ``_row`` and ``_epoch`` of :func:`_explode_lists`."""
    lists = [c for c in table.column_names if _is_list(table.column(c).type)]
    ids = table.column("source_id") if "source_id" not in lists else None
    exploded = _explode_lists(ids, {c: table.column(c) for c in lists}, "time", name, row0)
    for c in table.column_names:
        if c not in lists:
            exploded = exploded.append_column(c, pc.take(table.column(c), exploded.column("_parent")))
    return exploded.select([*table.column_names, "_row", "_epoch"])


def _is_list(typ: pa.DataType) -> bool:
    return pa.types.is_list(typ) or pa.types.is_large_list(typ)


def _at(table: pa.Table, i: int, row0: int) -> str:
    """Where row ``i`` of a batch is in its file: ``row N``, or, for a nested light curve exploded
    by :func:`_explode_nested`, ``row N (source_id X), epoch K``."""
    if "_epoch" not in table.column_names:
        return f"row {row0 + i + 1}"
    sid = table.column("source_id")[i].as_py() if "source_id" in table.column_names else None
    return f"row {table.column('_row')[i].as_py()} (source_id {sid}), epoch {table.column('_epoch')[i].as_py()}"


def _csv_batches(f: InputFile, batch_rows: int, columns: list[str] | None) -> Iterator[pa.Table]:
    """Stream a CSV/ECSV file as all-text columns."""
    skip, delim = _text_header(f)
    with _text_stream(f) as fh:
        for _ in range(skip):
            fh.readline()
        header = _split_header(fh.readline().decode("utf-8", "replace").strip(), delim)
    names = [h.strip() for h in header]
    include = [n for n in names if columns is None or n.lower() in columns]
    block = int(min(max(batch_rows * 256, 1 << 20), 1 << 28))
    stream = pa.input_stream(str(f.path), compression="gzip" if f.gzipped else None)
    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(skip_rows=skip, block_size=block),
        parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, include_columns=include,
            strings_can_be_null=True, null_values=["", "null", "NULL", "NaN", "nan", "--"],
            quoted_strings_can_be_null=True),
    )
    for batch in reader:
        if batch.num_rows:
            yield _lower(pa.Table.from_batches([batch]))


def _astropy_table(f: InputFile, columns: list[str] | None) -> pa.Table:
    """Read a VOTable or FITS table with astropy and convert it to Arrow."""
    import warnings

    from astropy.table import Table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unit strings astropy does not know are not our concern
        fmt = "votable" if f.fmt == "votable" else "fits"
        t = Table.read(f.path, format=fmt)
    arrays, names = [], []
    for name in t.colnames:
        if columns is not None and name.lower() not in columns:
            continue
        arrays.append(_astropy_column(t[name]))
        names.append(name.lower())
    return pa.table(arrays, names=names)


def _astropy_column(col) -> pa.Array:
    """Convert an astropy (masked) column to Arrow: nulls for masked cells, lists for array cells."""
    mask = np.asarray(getattr(col, "mask", np.zeros(len(col), bool)))
    data = np.asarray(col.data.data if hasattr(col.data, "data") and mask.any() else col)
    if data.dtype.kind == "O":  # variable-length arrays or strings, one Python object per cell
        cells = []
        for value, m in zip(col, mask if mask.ndim == 1 else mask.any(axis=tuple(range(1, mask.ndim)))):
            if m or value is None or value is np.ma.masked:
                cells.append(None)
            elif isinstance(value, (str, bytes)):
                cells.append(value.decode() if isinstance(value, bytes) else value)
            else:
                arr = np.ma.asarray(value)
                cells.append(None if arr.size == 0 else np.ma.filled(arr.astype(float), np.nan))
        if all(c is None or isinstance(c, str) for c in cells):
            return pa.array(cells, type=pa.string())
        return pa.array([None if c is None else c.tolist() for c in cells], type=pa.list_(pa.float64()))
    if data.dtype.kind in "SU":
        values = data.astype(str)
        return pa.array(values, mask=mask if mask.ndim == 1 else None, type=pa.string())
    if data.ndim > 1:  # fixed-size array cells
        n = int(np.prod(data.shape[1:]))
        flat = pa.array(data.reshape(len(data), n).ravel().astype(data.dtype.newbyteorder("=")))
        lists = pa.FixedSizeListArray.from_arrays(flat, n).cast(pa.list_(flat.type))
        if mask.ndim > 1 and mask.reshape(len(mask), -1).all(axis=1).any():
            row_null = pa.array(mask.reshape(len(mask), -1).all(axis=1))
            lists = pc.if_else(row_null, pa.nulls(len(lists), lists.type), lists)
        return lists
    data = data.astype(data.dtype.newbyteorder("="))
    return pa.array(data, mask=mask if mask.any() else None)


# --------------------------------------------------------------------------- casting


def parse_array_strings(arr: pa.Array, value_type: pa.DataType) -> pa.Array:
    """Parse text arrays such as ``"[1.0, 2.0, null]"`` or ``"(1.0, 2.0, NaN)"`` into a list column.

    Parameters
    ----------
    arr : pyarrow.Array
        String cells; a null or empty cell gives a null list.
    value_type : pyarrow.DataType
        Element type (``null``/``None`` elements become nulls).

    Returns
    -------
    pyarrow.ListArray
    """
    s = pc.utf8_trim_whitespace(arr)
    s = pc.utf8_trim_whitespace(pc.replace_substring_regex(s, r"^[\[\(]|[\]\)]$", ""))
    s = pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)
    parts = pc.split_pattern(s, ",")
    flat = pc.utf8_trim_whitespace(pc.list_flatten(parts))
    flat = pc.if_else(pc.is_in(flat, pa.array(["null", "NULL", "None", "--", ""])),
                      pa.scalar(None, pa.string()), flat)
    values = pc.cast(flat, value_type)
    offsets = pc.list_value_length(parts).fill_null(0).to_numpy(zero_copy_only=False).cumsum()
    offsets = pa.array(np.concatenate([[0], offsets]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, values, mask=pc.is_null(parts))


def cast_column(table: pa.Table, column: str, to: pa.DataType, name: str, row0: int = 0) -> pa.Array:
    """Cast one column to its canonical type, or fail naming the file, column and first bad row.

    Parameters
    ----------
    table : pyarrow.Table
        The batch.
    column : str
        Column name.
    to : pyarrow.DataType
        Target type; list targets accept list columns or text arrays.
    name : str
        File name for messages.
    row0 : int
        Row number of the batch's first row in the file (for messages).

    Returns
    -------
    pyarrow.Array
    """
    arr = table.column(column).combine_chunks()
    try:
        if pa.types.is_list(to) or pa.types.is_large_list(to):
            if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
                return parse_array_strings(arr, to.value_type)
            if pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
                arr = arr.cast(pa.list_(arr.type.value_type))
            if not pa.types.is_list(arr.type):
                raise pa.ArrowInvalid(f"expected an array column, found {arr.type}")
            return arr.cast(to)
        if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
            raise pa.ArrowInvalid(f"expected single values, found an array column ({arr.type})")
        if pa.types.is_string(arr.type) and not pa.types.is_string(to):
            arr = pc.utf8_trim_whitespace(arr)
        return arr.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        row = _first_bad_row(arr, to)
        where = f", {_at(table, row, row0)}" if row is not None else ""
        value = f" (value {arr[row].as_py()!r:.40})" if row is not None else ""
        raise _fail(name, f"column {column!r}{where}: cannot read as {to}{value}: {str(exc).splitlines()[0]}") from None


def _first_bad_row(arr: pa.Array, to: pa.DataType) -> int | None:
    """Index of the first cell that does not cast (error path only)."""
    if pa.types.is_list(to) or pa.types.is_list(arr.type):
        return None
    for i in range(len(arr)):
        try:
            arr.slice(i, 1).cast(to)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return i
    return None


# --------------------------------------------------------------------------- canonical shapes

#: The point table every epoch layout is turned into.
POINT_SCHEMA = pa.schema([
    ("source_id", pa.int64()), ("band", pa.int8()), ("time", pa.float64()), ("mag", pa.float64()),
    ("mag_err", pa.float64()), ("rejected_by_photometry", pa.bool_()), ("rejected_by_variability", pa.bool_()),
    ("empty", pa.bool_()),
])


def _flag(table: pa.Table, column: str, name: str, row0: int, n: int) -> pa.Array:
    """A boolean flag column, False where absent or null."""
    if column not in table.column_names:
        return pa.array(np.zeros(n, bool))
    return pc.fill_null(cast_column(table, column, pa.bool_(), name, row0), False)


def _mag_err(mag_err: pa.Array | None, flux: pa.Array | None, flux_error: pa.Array | None) -> pa.Array:
    """Magnitude errors as given, or 1.0857 * flux_error / flux."""
    if mag_err is not None:
        return mag_err
    return pc.multiply(pc.divide(flux_error, flux), MAG_ERR_FACTOR)


def epoch_points(table: pa.Table, layout: str, name: str, row0: int = 0) -> pa.Table:
    """Turn a batch of any epoch-photometry layout into one row per (source, band, transit).

    Parameters
    ----------
    table : pyarrow.Table
        A batch from :func:`iter_batches`.
    layout : str
        ``epoch_long`` (DataLink) or ``epoch_wide`` (per-transit rows or bulk array rows,
        told apart by the column types).
    name : str
        File name for messages.
    row0 : int
        Row number of the batch's first row in the file.

    Returns
    -------
    pyarrow.Table
        :data:`POINT_SCHEMA`. ``empty`` marks wide-layout slots with no time, magnitude and flux
        (a band not observed in that transit); nothing is dropped here.
    """
    if layout == "epoch_long":
        if _is_list(table.column("time").type):  # a nested light curve: one row per source
            table = _explode_nested(table, name, row0)
        return _long_points(table, name, row0)
    if layout == "epoch_wide":
        if is_array_column(table.column("g_transit_time")):
            table = _explode_bulk(table, name, row0)  # rows are now transits; messages name row and epoch
        return _wide_points(table, name, row0)
    raise ValueError(f"not an epoch layout: {layout}")


def is_array_column(col: pa.ChunkedArray) -> bool:
    """Whether a column holds arrays (list type or text like ``[1.0, ...]``).

    Parameters
    ----------
    col : pyarrow.ChunkedArray
        A column of a batch.

    Returns
    -------
    bool
    """
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        return True
    if pa.types.is_string(col.type):
        first = pc.drop_null(col)
        return len(first) > 0 and str(first[0].as_py()).lstrip()[:1] in ("[", "(")
    return False


def _long_points(table: pa.Table, name: str, row0: int) -> pa.Table:
    n = table.num_rows
    band_text = pc.utf8_upper(pc.utf8_trim_whitespace(cast_column(table, "band", pa.string(), name, row0)))
    band = pc.index_in(band_text, pa.array(BANDS))
    bad = pc.and_(pc.is_null(band), pc.is_valid(band_text))
    if pc.any(bad).as_py() or band.null_count > (band_text.null_count):
        i = int(np.flatnonzero(pc.fill_null(bad, True).to_numpy(zero_copy_only=False))[0])
        raise _fail(name, f"column 'band', {_at(table, i, row0)}: unknown band {band_text[i].as_py()!r} "
                          f"(expected G, BP or RP)")
    cols = set(table.column_names)
    mag_err = cast_column(table, "mag_err", pa.float64(), name, row0) if "mag_err" in cols else None
    flux = cast_column(table, "flux", pa.float64(), name, row0) if "flux" in cols else None
    flux_error = cast_column(table, "flux_error", pa.float64(), name, row0) if "flux_error" in cols else None
    return pa.table({
        "source_id": _source_ids(table, name, row0),
        "band": band.cast(pa.int8()),
        "time": cast_column(table, "time", pa.float64(), name, row0),
        "mag": cast_column(table, "mag", pa.float64(), name, row0),
        "mag_err": _mag_err(mag_err, flux, flux_error),
        "rejected_by_photometry": _flag(table, "rejected_by_photometry", name, row0, n),
        "rejected_by_variability": _flag(table, "rejected_by_variability", name, row0, n),
        "empty": pa.array(np.zeros(n, bool)),
    }, schema=POINT_SCHEMA)


def _source_ids(table: pa.Table, name: str, row0: int) -> pa.Array:
    """The source_id column as int64, refusing nulls and values no Gaia DR3 source_id has."""
    ids = cast_column(table, "source_id", pa.int64(), name, row0)
    if ids.null_count:
        i = int(np.flatnonzero(pc.is_null(ids).to_numpy(zero_copy_only=False))[0])
        raise _fail(name, f"column 'source_id', {_at(table, i, row0)}: empty source_id")
    values = ids.to_numpy()
    bad = np.flatnonzero((values <= 0) | (values >= MAX_SOURCE_ID))
    if len(bad):
        raise _fail(name, f"column 'source_id', {_at(table, int(bad[0]), row0)}: {values[bad[0]]} is not a "
                          f"Gaia DR3 source_id (must be above 0 and below 12 * 4**12 * 2**35)")
    return ids


def _explode_bulk(table: pa.Table, name: str, row0: int) -> pa.Table:
    """Bulk rows (one per source, array columns) -> one row per transit."""
    ids = _source_ids(table, name, row0)
    lists = {}
    for band, cols in WIDE_BANDS.items():
        for col, typ in zip(cols, (pa.float64(),) * 4 + (pa.bool_(),)):
            if col in table.column_names:
                lists[col] = cast_column(table, col, pa.list_(typ), name, row0)
    if "rejected_by_photometry" in table.column_names:
        lists["rejected_by_photometry"] = cast_column(table, "rejected_by_photometry", pa.list_(pa.bool_()), name, row0)
    out = _explode_lists(ids, lists, "g_transit_time", name, row0)
    return out.append_column("source_id", pc.take(ids, out.column("_parent")))


def _explode_lists(ids: pa.Array | None, lists: dict[str, pa.Array], ref: str, name: str, row0: int) -> pa.Table:
    """List columns of one row per source -> one row per element.

    Every list of a row must have as many values as ``lists[ref]``; a wholly null list (e.g. no
    BP for this source) stands for a row of nulls, and a null ``ref`` list for no elements.
    ``ids`` (one per row, or None) and ``row0`` (the file row of the first row) only name the row
    in messages. Three columns are added: ``_parent`` (the element's row in ``lists``), and, for
    messages (:func:`_at`), ``_row`` (that row's place in the file, 1-based) and ``_epoch`` (the
    element's place in its row's lists, 1-based).
    """
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    lists = {c: a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for c, a in lists.items()}
    ref_len = pc.list_value_length(lists[ref])
    n = pc.fill_null(ref_len, 0).to_numpy(zero_copy_only=False)
    out = {}
    for col, arr in lists.items():
        length = pc.list_value_length(arr)
        wrong = pc.and_(pc.is_valid(length), pc.not_equal(length, pc.fill_null(ref_len, 0)))
        if pc.any(wrong).as_py():
            i = int(np.flatnonzero(pc.fill_null(wrong, False).to_numpy(zero_copy_only=False))[0])
            source = f" (source_id {ids[i].as_py()})" if ids is not None else ""
            raise _fail(name, f"row {row0 + i + 1}{source}: column {col!r} has {length[i].as_py()} values "
                              f"but {ref} has {ref_len[i].as_py()}")
        filled = pc.if_else(pc.is_null(arr), _null_lists(n, arr.type), arr)
        out[col] = pc.list_flatten(filled)
    parents = pc.list_parent_indices(pc.if_else(pc.is_null(lists[ref]),
                                                _null_lists(np.zeros(len(lists[ref]), int), lists[ref].type),
                                                lists[ref]))
    parents = parents.to_numpy().astype(np.int64)
    first = np.flatnonzero(np.diff(parents, prepend=-1))  # where each row's elements start
    out["_parent"] = parents
    out["_row"] = parents + row0 + 1
    out["_epoch"] = np.arange(len(parents)) - np.repeat(first, np.diff(np.append(first, len(parents)))) + 1
    return pa.table(out)


def _null_lists(lengths: np.ndarray, typ: pa.DataType) -> pa.Array:
    """Lists of nulls with the given lengths, of list type ``typ`` (list or large_list)."""
    large = pa.types.is_large_list(typ)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64 if large else np.int32)
    make = pa.LargeListArray if large else pa.ListArray
    return make.from_arrays(pa.array(offsets), pa.nulls(int(offsets[-1]), typ.value_type))


def _wide_points(table: pa.Table, name: str, row0: int) -> pa.Table:
    """Per-transit rows (scalar columns) -> points, one block per band present."""
    n = table.num_rows
    ids = _source_ids(table, name, row0)
    rej_phot = _flag(table, "rejected_by_photometry", name, row0, n)
    blocks = []
    for code, (band, (t, m, fx, fe, var)) in enumerate(WIDE_BANDS.items()):
        if not {t, m, fx, fe} <= set(table.column_names):
            continue
        time = cast_column(table, t, pa.float64(), name, row0)
        mag = cast_column(table, m, pa.float64(), name, row0)
        flux = cast_column(table, fx, pa.float64(), name, row0)
        err = cast_column(table, fe, pa.float64(), name, row0)
        empty = pc.and_(pc.and_(_missing(time), _missing(mag)), _missing(flux))
        blocks.append(pa.table({
            "source_id": ids, "band": pa.array(np.full(n, code, np.int8)), "time": time, "mag": mag,
            "mag_err": _mag_err(None, flux, err), "rejected_by_photometry": rej_phot,
            "rejected_by_variability": _flag(table, var, name, row0, n), "empty": empty,
        }, schema=POINT_SCHEMA))
    return pa.concat_tables(blocks)


def _missing(arr: pa.Array) -> pa.Array:
    """True where a float value is null or NaN."""
    return pc.fill_null(pc.is_nan(arr), True)


def xp_coefficients(table: pa.Table, name: str, row0: int = 0) -> pa.Table:
    """XP continuous mean spectra in their canonical Arrow form.

    Parameters
    ----------
    table : pyarrow.Table
        A batch of an XP_CONTINUOUS / XpContinuousMeanSpectrum table.
    name : str
        File name for messages.
    row0 : int
        Row number of the batch's first row in the file.

    Returns
    -------
    pyarrow.Table
        Exactly the columns of :data:`XP_COLUMNS`; a band missing from the table or from a
        source gives null lists (and null counts) for it.
    """
    out = {"source_id": _source_ids(table, name, row0)}
    for col, typ in list(XP_COLUMNS.items())[1:]:
        if col in table.column_names:
            arr = cast_column(table, col, typ, name, row0)
            if pa.types.is_list(typ):  # an empty array is a missing band
                arr = pc.if_else(pc.equal(pc.list_value_length(arr), 0), pa.nulls(len(arr), typ), arr)
            out[col] = arr
        else:
            out[col] = pa.nulls(table.num_rows, typ)
    return pa.table(out, schema=pa.schema(list(XP_COLUMNS.items())))


def source_columns(table: pa.Table, name: str, row0: int = 0) -> pa.Table:
    """The ``gaia_source`` columns of a batch, cast to their archive types.

    Parameters
    ----------
    table : pyarrow.Table
        A batch with source_id and some :data:`GAIA_SOURCE_COLUMNS`.
    name : str
        File name for messages.
    row0 : int
        Row number of the batch's first row in the file.

    Returns
    -------
    pyarrow.Table
        source_id then the known columns, in the archive's order of this table.
    """
    out = {"source_id": _source_ids(table, name, row0)}
    for col in table.column_names:
        if col in GAIA_SOURCE_COLUMNS:
            out[col] = cast_column(table, col, GAIA_SOURCE_COLUMNS[col], name, row0)
    return pa.table(out)


def label_columns(table: pa.Table, name: str, row0: int = 0) -> pa.Table:
    """Classes of a batch as ``source_id, best_class_name, best_class_score``.

    Parameters
    ----------
    table : pyarrow.Table
        A batch with source_id and a class column (:data:`CLASS_COLUMNS`).
    name : str
        File name for messages.
    row0 : int
        Row number of the batch's first row in the file.

    Returns
    -------
    pyarrow.Table
    """
    cls = next(c for c in CLASS_COLUMNS if c in table.column_names)
    score = next((c for c in SCORE_COLUMNS if c in table.column_names), None)
    names = cast_column(table, cls, pa.string(), name, row0)
    if names.null_count:
        i = int(np.flatnonzero(pc.is_null(names).to_numpy(zero_copy_only=False))[0])
        raise _fail(name, f"column {cls!r}, row {row0 + i + 1}: empty class name")
    return pa.table({
        "source_id": _source_ids(table, name, row0),
        "best_class_name": pc.utf8_trim_whitespace(names),
        "best_class_score": (cast_column(table, score, pa.float32(), name, row0) if score
                             else pa.nulls(table.num_rows, pa.float32())),
    })


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
