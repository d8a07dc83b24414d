"""How much the simulated survey looks like Gaia DR3, and what the period search makes of
long-period variables on Gaia's real sampling. Run by hand; prints two tables.

(a) Light-curve statistics per DR3 class, simulated sources brighter than G = 16 (so that
    noise does not dilute the shapes), beside the same statistics of 2,500 real DR3 G light
    curves (500 each of RR, ECL, CEP, LPV and DSCT|GDOR|SXPHE by DR3's classifier, a bright
    sample with median G 10-15) computed with the same feature code (latentcat ingest +
    latentcat features), and the targets the simulator is held to. The real LPV period is
    the one the period search gave before it knew the scanning law's alias bands. Then the
    colour slope d(BP-RP)/dG (latentcat.features.colour) per simulated class, beside the slopes
    of the real DR3 sources at hand (tests/data/gaia_dr3: 7 SOLAR_LIKE, 1 YSO).
(b) Long-period variables of the simulator (Miras, semi-regular and irregular variables) put
    on the epochs of real DR3 light curves (the eight sources in tests/data/gaia_dr3, each
    used for many simulated stars) and on the simulator's own scanning law: the share whose
    period falls at 11.5-12.8 c/d (three times Gaia's spin frequency, where 22 % of real DR3
    LPVs got their period before), inside an alias band of the curve's own sampling, that get
    no reliable period, and, for those with a true period, a period within 10 % of it.

(c) What ``period_reliable`` promises, per simulated class: every class simulated alike
    (``--per-class`` sources each, three times as many EA and SR) on the simulator's scanning
    law at G 11-16, through the period search. For each: the share flagged reliable, the
    precision of the flag (flagged sources whose period is right: within 1 % of the truth, or
    of its half or double for binaries; within 10 % of either period for Miras and
    semi-regular variables, whose phase wanders; within 5 % for spotted stars, whose spots
    rotate differentially), the share of the right periods that are flagged, and the share
    flagged with a period under 10 d, beside the targets: red-noise variables (irregular LPVs,
    young stars, quasars) flagged <= 5 %; precision >= 95 % for every periodic class; EA, EB and
    EW with a right period flagged >= 90 %. On real DR3 LPVs (G 10-15) the search of 2026-12-06
    flagged 20 % reliable with a period under 10 d.

    python benchmarks/realism.py                       # 20,000 simulated sources, seed 1
    python benchmarks/realism.py --n 40000 --seed 2    # another seed
    python benchmarks/realism.py --only reliability --seed 41   # (c) alone
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from latentcat.features import period as period_search  # noqa: E402
from latentcat.gaia import simulate_lc as lc  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "gaia_dr3"
#: Medians of 2,500 real DR3 G light curves (bright sample), latentcat features:
#: (g_skew, period_power, period in d, g_amplitude in mag).
REAL = {
    "RR": (-0.66, 0.74, 0.55, 0.81),
    "ECL": (2.65, 0.25, 1.19, 0.33),
    "DSCT|GDOR|SXPHE": (-0.42, 0.90, 0.053, 0.19),
    "CEP": (-0.19, 0.88, 4.4, 0.59),
    "LPV": (0.06, 0.65, 3.9, 0.16),
}
#: Targets on the simulated survey at G < 16: (statistic, bound, "<=" or ">=").
TARGETS = {
    "RR": [("g_skew", -0.3, "<=")],
    "ECL": [("g_skew", 1.0, ">="), ("period_power", 0.5, "<=")],
    "DSCT|GDOR|SXPHE": [("g_skew", -0.2, "<=")],
}
STATS = ("g_skew", "period_power", "period", "g_amplitude")
ALIAS = (11.5, 12.8)


def survey_table(n: int, seed: int, workers: int) -> None:
    """(a): simulate, ingest, extract features; medians per DR3 class at G < 16."""
    from latentcat.features.extract import extract_features
    from latentcat.gaia.ingest import ingest
    from latentcat.gaia.simulate import CLASS_TABLE, simulate_survey

    with tempfile.TemporaryDirectory(prefix="latentcat-realism-") as tmp:
        tmp = Path(tmp)
        simulate_survey(n=n, seed=seed, out=tmp)
        ingest([tmp / "archive"], tmp / "stage")
        extract_features(tmp / "stage", tmp / "features", n_workers=workers)
        feats = pq.read_table(tmp / "features", columns=["source_id", *STATS, "period_reliable", "colour_slope"]).to_pandas()
        truth = pq.read_table(tmp / "truth.parquet", columns=["source_id", "class", "mean_g"]).to_pandas()
    df = feats.merge(truth, on="source_id")
    df["coarse"] = df["class"].map({k: v["coarse"] for k, v in CLASS_TABLE.items()})
    bright = df[df["mean_g"] < 16]
    print(f"\n(a) simulated survey of {n} sources (seed {seed}), {len(bright)} brighter than G = 16: "
          "median per DR3 class, simulated / real DR3")
    print(f"    {'class':<17}{'n':>6}" + "".join(f"{s:>17}" for s in STATS) + "   targets")
    for coarse, real in REAL.items():
        rows = bright[bright["coarse"] == coarse]
        med = [float(np.nanmedian(rows[s])) for s in STATS]
        cells = "".join(f"{m:>9.3g} / {r:<5.3g}" for m, r in zip(med, real))
        checks = []
        for stat, bound, op in TARGETS.get(coarse, []):
            value = med[STATS.index(stat)]
            ok = value <= bound if op == "<=" else value >= bound
            checks.append(f"{stat} {op} {bound}: {'met' if ok else 'NOT met'}")
        print(f"    {coarse:<17}{len(rows):>6}{cells}   {'; '.join(checks)}")
    real = real_colour_slopes()
    print("    colour slope d(BP-RP)/dG, median, simulated (G < 16) / the real DR3 sources in tests/data/gaia_dr3:")
    for coarse, fine in (("SOLAR_LIKE", "ROT"), ("YSO", "YSO")):
        sim = bright.loc[bright["class"] == fine, "colour_slope"]
        values = real.get(coarse, [])
        print(f"    {coarse:<17}{sim.notna().sum():>6}{float(np.nanmedian(sim)):>9.3g} / {float(np.median(values)):<5.3g}"
              f"   ({len(values)} real: {', '.join(f'{v:.2f}' for v in values)})")
    for fine in ("RRAB", "DCEP", "EW", "EA", "MIRA"):
        sim = bright.loc[bright["class"] == fine, "colour_slope"]
        print(f"    {fine:<17}{sim.notna().sum():>6}{float(np.nanmedian(sim)):>9.3g}   (no real curve of this class at hand)")


def real_epochs() -> list[np.ndarray]:
    """The G epochs of the DR3 sources in tests/data/gaia_dr3 (flagged epochs dropped)."""
    from astropy.table import Table

    t = Table.read(DATA / "epoch_photometry_datalink_8_sources.vot.xml")
    t = t[(t["band"] == "G") & ~np.asarray(t["rejected_by_photometry"], bool) & ~np.asarray(t["rejected_by_variability"], bool)]
    return [np.sort(np.asarray(t["time"][t["source_id"] == s], float)) for s in np.unique(t["source_id"])]


def real_colour_slopes() -> dict[str, list[float]]:
    """Colour slopes (latentcat.features.colour) of the DR3 sources in tests/data/gaia_dr3, by
    their DR3 class: the same code on the archive's epochs of all three bands."""
    from astropy.table import Table

    from latentcat.features import clean
    from latentcat.features.colour import colour_slopes

    t = Table.read(DATA / "epoch_photometry_datalink_8_sources.vot.xml")
    t = t[~np.asarray(t["rejected_by_photometry"], bool) & ~np.asarray(t["rejected_by_variability"], bool)
          & np.isfinite(np.asarray(t["mag"], float))]
    labels = Table.read(DATA / "epoch_photometry_8_sources_labels.csv")
    out: dict[str, list[float]] = {}
    for sid in np.unique(t["source_id"]):
        bands = {}
        for band in ("G", "BP", "RP"):
            s = t[(t["source_id"] == sid) & (t["band"] == band)]
            s.sort("time")
            mag = np.asarray(s["mag"], float)
            bands[band.lower()] = (np.asarray(s["time"], float)[None], mag[None],
                                   (1.0857 * np.asarray(s["flux_error"], float) / np.asarray(s["flux"], float))[None])
        g_t, g_m, g_e = bands.pop("g")
        slope, _ = colour_slopes(g_t, np.where(clean.clean_mask(g_m, g_e), g_m, np.nan), bands)
        cls = str(labels["best_class_name"][labels["source_id"] == sid][0])
        out.setdefault(cls, []).append(float(slope[0]))
    return out


def simulated_curves(cls: np.ndarray, rng: np.random.Generator, epochs: list[np.ndarray] | None = None):
    """Light curves of simulated classes ``cls`` at G 11-16, on the simulator's scanning law or,
    given ``epochs``, on those epochs in turn; NaN-padded (time, mag, err), parameters, subclasses."""
    p, sub = lc.draw_parameters(cls, rng)
    if epochs is not None:
        chosen = [epochs[i % len(epochs)] for i in range(cls.size)]
        offsets = np.r_[0, np.cumsum([len(x) for x in chosen])]
        flat = np.concatenate(chosen)
    else:
        flat, offsets = lc.gaia_cadence(rng.uniform(-90, 90, cls.size), rng)
    dm, _ = lc.light_curves(cls, p, sub, flat, offsets, rng)
    g = rng.uniform(11, 16, cls.size)
    src, rank = lc.flat_index(offsets)
    err = lc.g_mag_error(g[src] + dm)
    mag = g[src] + dm + err * rng.standard_normal(flat.size)
    width = int(np.diff(offsets).max())
    T, M, E = (np.full((cls.size, width), np.nan) for _ in range(3))
    T[src, rank], M[src, rank], E[src, rank] = flat, mag, err
    return T, M, E, p, sub


def lpv_table(n_per: int, seed: int) -> None:
    """(b): simulated LPVs on real and simulated sampling through the period search."""
    rng = np.random.default_rng(seed)
    epochs = real_epochs()
    for name, times in (("real DR3 epochs", None), ("simulated scanning law", "sim")):
        cls = np.repeat([lc.CLASSES.index("MIRA"), lc.CLASSES.index("SR")], [n_per // 4, n_per])
        T, M, E, p, sub = simulated_curves(cls, rng, epochs if times is None else None)
        res = period_search.find_periods(T, M, E)
        f = res["frequency"]
        in_band = period_search.alias_bands(T, f[:, None])[:, 0]
        label = np.where(cls == lc.CLASSES.index("MIRA"), "MIRA", sub).astype(str)
        print(f"\n(b) simulated long-period variables on {name} (G 11-16)")
        print(f"    {'kind':<12}{'n':>6}{'11.5-12.8 c/d':>15}{'in own band':>13}{'not reliable':>14}"
              f"{'within 10 %':>13}{'reliable, 11.5-12.8':>21}")
        for kind in ("MIRA", "SEMIREGULAR", "OSARG", "IRREGULAR"):
            k = label == kind
            alias = (f[k] > ALIAS[0]) & (f[k] < ALIAS[1])
            true_p = p["period"][k]
            within = np.abs(res["period"][k] / true_p - 1) < 0.1 if np.isfinite(true_p).all() else None
            print(f"    {kind:<12}{k.sum():>6}{alias.mean():>15.1%}{in_band[k].mean():>13.1%}"
                  f"{1 - res['period_reliable'][k].mean():>14.1%}{(f'{within.mean():.1%}' if within is not None else '-'):>13}"
                  f"{np.mean(alias & res['period_reliable'][k]):>21.1%}")


PERIODIC = ("RRAB", "RRC", "DCEP", "T2CEP", "EA", "EB", "EW", "ELL", "MIRA", "SEMIREGULAR", "OSARG", "DSCT", "ROT")
RED_NOISE = ("IRREGULAR", "YSO", "QSO")
BINARY = ("EA", "EB", "EW", "ELL")


def period_right(kind: np.ndarray, found: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Whether each found period is right for its simulated kind (see (c) in the module docstring)."""
    true, true2 = p["period"], p["period2"]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio, ratio2 = found / true, found / true2
        exact = np.abs(ratio - 1) < 0.01
        binary = np.isin(kind, BINARY) & ((np.abs(2 * ratio - 1) < 0.01) | (np.abs(ratio / 2 - 1) < 0.01))
        wandering = np.isin(kind, ("MIRA", "SEMIREGULAR", "OSARG")) & ((np.abs(ratio - 1) < 0.1) | (np.abs(ratio2 - 1) < 0.1))
        spotted = (kind == "ROT") & (np.abs(ratio - 1) < 0.05)
    return exact | binary | wandering | spotted


def reliability_table(per_class: int, seed: int) -> None:
    """(c): the reliability flag per simulated class, beside its targets."""
    rng = np.random.default_rng(seed)
    names = [c for c in lc.CLASSES if c != "CONST"] + ["CONST"]
    cls = np.repeat([lc.CLASSES.index(c) for c in names], [per_class * (3 if c in ("EA", "SR") else 1) for c in names])
    T, M, E, p, sub = simulated_curves(cls, rng)
    res = period_search.find_periods(T, M, E)
    kind = np.array([lc.CLASSES[c] for c in cls], dtype=object)
    kind[cls == lc.CLASSES.index("SR")] = sub[cls == lc.CLASSES.index("SR")]
    kind = kind.astype(str)
    right = period_right(kind, res["period"], p)
    flagged = res["period_reliable"]
    print(f"\n(c) period_reliable per simulated class, simulator's scanning law, G 11-16 (seed {seed})")
    print(f"    {'kind':<12}{'n':>6}{'flagged':>9}{'precision':>11}{'right flagged':>15}{'flagged, P < 10 d':>19}   targets")
    for k in [*PERIODIC, *RED_NOISE, "CONST"]:
        s = kind == k
        share, short = flagged[s].mean(), np.mean(flagged[s] & (res["period"][s] < 10))
        precision = (flagged[s] & right[s]).sum() / max(1, flagged[s].sum())
        recall = (flagged[s] & right[s]).sum() / max(1, right[s].sum())
        checks = []
        if k in PERIODIC:
            checks.append(f"precision >= 95%: {'met' if precision >= 0.95 else 'NOT met'}")
        if k in ("EA", "EB", "EW"):
            checks.append(f"right flagged >= 90%: {'met' if recall >= 0.9 else 'NOT met'}")
        if k in RED_NOISE:
            checks.append(f"flagged <= 5%: {'met' if share <= 0.05 else 'NOT met'}")
        cells = f"{precision:>11.1%}{recall:>15.1%}" if k in PERIODIC else f"{'-':>11}{'-':>15}"
        print(f"    {k:<12}{s.sum():>6}{share:>9.1%}{cells}{short:>19.1%}   {'; '.join(checks)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="simulated sources for (a) (default 20000)")
    parser.add_argument("--lpv", type=int, default=2000, help="simulated semi-regular and irregular LPVs for (b), plus a quarter as many Miras")
    parser.add_argument("--per-class", type=int, default=300, help="simulated sources per class for (c) (default 300)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", choices=("survey", "lpv", "reliability"), help="print one table only")
    args = parser.parse_args()
    if args.only in (None, "survey"):
        survey_table(args.n, args.seed, args.workers)
    if args.only in (None, "lpv"):
        lpv_table(args.lpv, args.seed)
    if args.only in (None, "reliability"):
        reliability_table(args.per_class, args.seed)


if __name__ == "__main__":
    main()
