"""Gaia DR3 XP (BP/RP) continuous spectra -> sampled pseudo-spectra, batched.

Gaia DR3 publishes each BP and RP mean spectrum as 55 coefficients of a set of
Hermite-function bases, with their formal errors and correlations (the lower
triangle of the 55 x 55 matrix, 1485 values). Sampling a spectrum on a grid of
pseudo-wavelengths ``u`` is a linear map::

    flux(u)       = c @ D(u)
    flux_error(u) = sqrt(diag(D(u)^T Cov D(u))),   Cov = diag(e) R diag(e)

where ``D`` (55 x n_samples) is the design matrix of the band, built here once
from the official DPAC basis configuration that GaiaXPy ships, and applied to
all sources at once. The numbers are those of
``gaiaxpy.convert(..., sampling=XP_SAMPLING, truncation=False)``:

* no truncation: all 55 bases are used and ``*_n_relevant_bases`` is ignored
  (GaiaXPy's default, ``truncation=False``);
* GaiaXPy divides the errors by ``*_standard_deviation`` to build the covariance
  and multiplies the sampled error by it again; the factor cancels, so the
  standard deviation is not needed here.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from latentcat.errors import InputError

__all__ = ["XP_SAMPLING", "N_COEFFICIENTS", "BANDS", "XP_SCHEMA", "design_matrix", "basis_function_id", "convert_xp", "gaiaxpy_config_dir"]

#: GaiaXPy's pseudo-wavelength axis, 55 samples per band.
XP_SAMPLING = np.linspace(0, 60, 55)

#: Number of basis functions (and coefficients) per band in Gaia DR3.
N_COEFFICIENTS = 55

BANDS = ("bp", "rp")

#: The ``xp.parquet`` schema of docs/schemas.md.
XP_SCHEMA = pa.schema(
    [("source_id", pa.int64())]
    + [(f"{band}_{name}", pa.list_(pa.float32())) for band in BANDS for name in ("flux", "flux_error")]
)

# Rows converted per block: bounds memory (the correlation block is rows x 1485 floats).
_BLOCK_ROWS = 2048

# Lower-triangle index pairs (k > l) in the order the archive stores the correlations.
_TRIL_K, _TRIL_L = np.tril_indices(N_COEFFICIENTS, k=-1)
N_CORRELATIONS = _TRIL_K.size


def gaiaxpy_config_dir() -> Path:
    """GaiaXPy's configuration folder (``gaiaxpy.config.paths.config_path``), found without
    importing GaiaXPy, whose import takes about 2 s."""
    from importlib.util import find_spec

    return Path(find_spec("gaiaxpy").submodule_search_locations[0]) / "config"


@lru_cache(maxsize=1)
def _basis_configuration() -> dict[str, dict]:
    """Read GaiaXPy's Hermite basis configuration for BP and RP (the DR3 bases 56 and 57): the
    file its config.ini names under ``[converter] hermite_bases``."""
    from configparser import ConfigParser

    ini = ConfigParser()
    ini.read(gaiaxpy_config_dir() / "config.ini")
    root = ElementTree.parse(gaiaxpy_config_dir() / ini.get("converter", "hermite_bases")).getroot()
    config = {}
    for band in BANDS:
        node = root.find(f"hermiteFunction/{band}Config")
        dimension = int(node.findtext("dimension"))
        transformed = int(node.findtext("transformedSetDimension"))
        values = [float(v.text) for v in node.find("transformationMatrix").iter("value")]
        config[band] = {
            "basis_function_id": int(node.findtext("uniqueId")),
            "range": tuple(float(node.find("range").attrib[k]) for k in ("from", "to")),
            "normalized_range": tuple(float(node.find("normalizedRange").attrib[k]) for k in ("from", "to")),
            "transformation": np.array(values).reshape(dimension, transformed),
        }
    return config


def basis_function_id(band: str) -> int:
    """Gaia DR3 ``{band}_basis_function_id`` of the bases used here (56 for BP, 57 for RP)."""
    return _basis_configuration()[_check_band(band)]["basis_function_id"]


def _check_band(band: str) -> str:
    band = band.lower()
    if band not in BANDS:
        raise ValueError(f"band must be 'bp' or 'rp', not {band!r}")
    return band


def _hermite_functions(n: int, x: np.ndarray) -> np.ndarray:
    """Orthonormal Hermite functions psi_0..psi_{n-1} at x, shape (n, len(x)), by the stable recurrence."""
    psi = np.empty((n, x.size))
    psi[0] = np.pi ** -0.25 * np.exp(-0.5 * x**2)
    if n > 1:
        psi[1] = np.sqrt(2.0) * x * psi[0]
    for k in range(2, n):
        psi[k] = np.sqrt(2.0 / k) * x * psi[k - 1] - np.sqrt((k - 1) / k) * psi[k - 2]
    return psi


def design_matrix(band: str, sampling: np.ndarray = XP_SAMPLING) -> np.ndarray:
    """Design matrix of a band's DR3 bases on a pseudo-wavelength grid.

    Parameters
    ----------
    band : {'bp', 'rp'}
    sampling : array of float
        Pseudo-wavelengths (GaiaXPy's axis, 0-60 covers the spectrum).

    Returns
    -------
    numpy.ndarray, shape (55, len(sampling)), float64
        ``flux = coefficients @ D``.
    """
    config = _basis_configuration()[_check_band(band)]
    (lo, hi), (norm_lo, norm_hi) = config["range"], config["normalized_range"]
    scale = (norm_hi - norm_lo) / (hi - lo)
    x = np.asarray(sampling, dtype=np.float64) * scale + (norm_lo - lo * scale)
    transformation = config["transformation"]
    return transformation @ _hermite_functions(transformation.shape[1], x)


def _sample(design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precomputed products for the errors: D**2 (55, n) and D_k * D_l over the lower triangle (1485, n)."""
    return design**2, design[_TRIL_K] * design[_TRIL_L]


def _list_column(table: pa.Table, column: str, width: int, present: np.ndarray,
                 source_id: np.ndarray) -> pa.Array:
    """A list column, checked: a list on every ``present`` row, each of ``width`` values."""
    if column not in table.column_names:
        raise InputError(f"XP table has no column '{column}'")
    chunked = table.column(column)
    array = chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
            or pa.types.is_fixed_size_list(array.type)):
        raise InputError(f"XP column '{column}' must be a list column, not {array.type}")
    valid = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    missing = present & ~valid
    if missing.any():
        raise InputError(f"XP column '{column}' is null for source_id {source_id[missing][0]}, "
                         f"which has {column.split('_')[0].upper()} coefficients")
    lengths = pc.list_value_length(array).fill_null(0).to_numpy()
    bad = present & (lengths != width)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise InputError(f"XP column '{column}' has {lengths[i]} values for source_id {source_id[i]}, "
                         f"expected {width}")
    return array


def _block_values(array: pa.Array, rows: slice, present: np.ndarray, width: int, dtype,
                  column: str, source_id: np.ndarray) -> np.ndarray:
    """The ``present`` rows of ``array[rows]`` as an (n, width) array; a null or non-finite value raises."""
    block = array.slice(rows.start, rows.stop - rows.start)
    keep = present[rows]
    if block.null_count or not keep.all():
        block = block.filter(pa.array(keep))
    out = np.asarray(block.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(-1, width)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        sid = source_id[rows][keep][~finite][0]
        raise InputError(f"XP column '{column}' has a null or non-finite value for source_id {sid}")
    return out


def _to_list_array(values: np.ndarray, present: np.ndarray) -> pa.Array:
    """(n_present, width) float values -> list<float> column of len(present) rows, null where not present."""
    width = values.shape[1]
    counts = np.where(present, width, 0)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    flat = pa.array(np.asarray(values, dtype=np.float32).ravel(), type=pa.float32())
    return pa.ListArray.from_arrays(pa.array(offsets), flat, mask=pa.array(~present))


def _convert_band(coefficients, errors, correlations, design, design_sq, design_pairs):
    """Flux and flux error of one band for a block of sources.

    The flux is computed in float64. The variance diag(D^T diag(e) R diag(e) D) is written as
    sum_k e_k^2 D_kj^2 + 2 sum_{k>l} R_kl e_k e_l D_kj D_lj, one matrix product over the 1485
    correlations (half the work of the full quadratic form); it runs in float32, the precision
    of the archive's errors and correlations (relative error ~1e-6 on the result).
    """
    flux = coefficients @ design
    pair_weights = np.take(errors, _TRIL_K, axis=1)
    pair_weights *= np.take(errors, _TRIL_L, axis=1)
    pair_weights *= correlations
    variance = (errors * errors) @ design_sq
    variance += 2.0 * (pair_weights @ design_pairs)
    return flux, np.sqrt(np.clip(variance, 0.0, None))


def convert_xp(coefficients: pa.Table, sampling: np.ndarray = XP_SAMPLING) -> pa.Table:
    """Sample XP continuous spectra on the pseudo-wavelength grid, all sources at once.

    Parameters
    ----------
    coefficients : pyarrow.Table
        Archive XP_CONTINUOUS layout: ``source_id`` and, per band, ``{band}_coefficients``
        (55 values), ``{band}_coefficient_errors`` (55) and ``{band}_coefficient_correlations``
        (1485, lower triangle, archive order). A null ``{band}_coefficients`` marks a missing band.
        Other columns (n_relevant_bases, standard_deviation, ...) are accepted and not used.
    sampling : array of float
        Pseudo-wavelengths; the default is the catalogue's grid ``XP_SAMPLING``.

    Returns
    -------
    pyarrow.Table
        The ``xp.parquet`` schema: source_id, bp_flux, bp_flux_error, rp_flux, rp_flux_error
        (list<float>, e-/s), null for a missing band; rows in input order.

    Raises
    ------
    InputError
        A missing column, a list of the wrong length, or a null/non-finite value, naming the source_id.
    """
    if "source_id" not in coefficients.column_names:
        raise InputError("XP table has no column 'source_id'")
    source_column = coefficients.column("source_id")
    if source_column.null_count:
        raise InputError("XP table has a null source_id")
    source_id = source_column.to_numpy().astype(np.int64)
    n_samples = len(sampling)

    columns: dict[str, pa.Array] = {"source_id": pa.array(source_id, type=pa.int64())}
    for band in BANDS:
        name = f"{band}_coefficients"
        if name not in coefficients.column_names:
            raise InputError(f"XP table has no column '{name}'")
        present = ~np.asarray(coefficients.column(name).is_null().to_numpy(zero_copy_only=False), dtype=bool)
        parts = {  # column -> (checked array, width, dtype of the computation)
            name: (N_COEFFICIENTS, np.float64),
            f"{band}_coefficient_errors": (N_COEFFICIENTS, np.float32),
            f"{band}_coefficient_correlations": (N_CORRELATIONS, np.float32),
        }
        arrays = {col: _list_column(coefficients, col, width, present, source_id) for col, (width, _) in parts.items()}

        design = design_matrix(band, sampling)
        design_sq, design_pairs = (m.astype(np.float32) for m in _sample(design))
        flux = np.empty((int(present.sum()), n_samples), dtype=np.float32)
        flux_error = np.empty_like(flux)
        done = 0
        for start in range(0, source_id.size, _BLOCK_ROWS):
            rows = slice(start, min(start + _BLOCK_ROWS, source_id.size))
            coeff, errors, corr = (_block_values(arrays[col], rows, present, width, dtype, col, source_id)
                                   for col, (width, dtype) in parts.items())
            out = slice(done, done + coeff.shape[0])
            flux[out], flux_error[out] = _convert_band(coeff, errors, corr, design, design_sq, design_pairs)
            done = out.stop
        columns[f"{band}_flux"] = _to_list_array(flux, present)
        columns[f"{band}_flux_error"] = _to_list_array(flux_error, present)
    return pa.table(columns, schema=XP_SCHEMA)
