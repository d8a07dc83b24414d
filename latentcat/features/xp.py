"""XP model inputs: BP then RP sampled spectra scaled by one number per source.

The 55 BP and 55 RP samples are concatenated (BP first) and divided, with their errors, by
``xp_scale``: the 99.5th percentile (linear interpolation) of the 110 fluxes. One scale for
both bands keeps the colour information.

Nothing is invented for incomplete spectra. ``xp_reason`` says why a source has no XP vector:

- ``missing_bp`` / ``missing_rp``: only one band was published; the other is not filled in.
- ``missing_xp``: the source is in ``xp.parquet`` but has neither band.
- ``no_xp``: the source is not in ``xp.parquet`` at all (or there is no ``xp.parquet``).
- ``nonpositive_scale``: the 99.5th percentile of the fluxes is not positive.
"""

from __future__ import annotations

import numpy as np

N_SAMPLES = 55
SCALE_PERCENTILE = 99.5


def xp_vectors(bp_flux: np.ndarray, bp_err: np.ndarray, rp_flux: np.ndarray, rp_err: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scaled BP+RP vectors for a batch of sources.

    Parameters
    ----------
    bp_flux, bp_err, rp_flux, rp_err : float arrays (n, 55)
        Sampled spectra and errors; a row of NaN means the band is missing.

    Returns
    -------
    flux, flux_error : float32 arrays (n, 110)
        BP then RP divided by ``xp_scale``; NaN rows where ``reason`` is set.
    xp_scale : float32 array (n,)
        NaN where ``reason`` is set.
    reason : object array (n,)
        None where the vector exists, else one of ``missing_bp``, ``missing_rp``,
        ``missing_xp``, ``nonpositive_scale``.
    """
    has_bp = np.isfinite(bp_flux).all(axis=1)
    has_rp = np.isfinite(rp_flux).all(axis=1)
    flux = np.concatenate([bp_flux, rp_flux], axis=1).astype(np.float64)
    err = np.concatenate([bp_err, rp_err], axis=1).astype(np.float64)
    both = has_bp & has_rp
    scale = np.full(len(flux), np.nan)
    if both.any():
        scale[both] = np.percentile(flux[both], SCALE_PERCENTILE, axis=1)
    reason = np.full(len(flux), None, dtype=object)
    reason[both & ~(scale > 0)] = "nonpositive_scale"
    reason[has_bp & ~has_rp] = "missing_rp"
    reason[~has_bp & has_rp] = "missing_bp"
    reason[~has_bp & ~has_rp] = "missing_xp"
    ok = both & (scale > 0)
    out_scale = np.where(ok, scale, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.where(ok[:, None], flux / out_scale[:, None], np.nan)
        err = np.where(ok[:, None], err / out_scale[:, None], np.nan)
    return flux.astype(np.float32), err.astype(np.float32), out_scale.astype(np.float32), reason
