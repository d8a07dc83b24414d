"""Feature-stage benchmark: speed of the period search and of the whole step, and accuracy.

Simulates a survey (latentcat.gaia.simulate), ingests it, then prints

1. light curves per second per core of latentcat's period search and of astropy's
   ``LombScargle(...).autopower`` (same curves, same frequency range, same run), and
   their ratio;
2. sources per second per core of the whole feature step (``extract_features``, one worker);
3. the fraction of RR Lyrae, Cepheids and eclipsing binaries with >= 40 cleaned epochs and
   G < 18 whose period is recovered within 1 %. For a binary ``period`` is the time between
   successive eclipses (latentcat.features.period): half the orbital period when both
   eclipses are seen, the orbital period when only one is, and either counts;
4. for the detached binaries (EA) of 3., the same by the number of distinct eclipses observed
   (primary or secondary eclipses, told apart by the true orbit, holding an epoch at least
   5 sigma deep): the data fix an EA's period only when enough eclipses were caught;
5. for the same sources, what ``period_reliable`` promises per class: the share flagged, the
   precision of the flag (flagged periods within 1 %) and the share of the right periods that
   are flagged, beside the targets (precision >= 95 % for every periodic class; EA, EB and EW
   with a right period flagged >= 90 %; red-noise variables flagged <= 5 %).

Run:  python benchmarks/features.py            (1,000 sources, about a minute)
      python benchmarks/features.py --n 20000  (larger)
      python benchmarks/features.py --n 30000 --seed 11 --set N_ALIGN=1024   (another eclipse search setting)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: rates are per core
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from latentcat.features import eclipse  # noqa: E402
from latentcat.features import period as period_search  # noqa: E402
from latentcat.features.clean import clean_mask  # noqa: E402
from latentcat.features.extract import extract_features  # noqa: E402
from latentcat.features.ragged import compact, pad_lists  # noqa: E402

PULSATORS = {"RR Lyrae": ("RRAB", "RRC"), "Cepheids": ("DCEP", "T2CEP")}
BINARIES = {"EA": ("EA",), "EB": ("EB",), "EW": ("EW",), "ELL": ("ELL",)}
TOLERANCE = 0.01
SEEN_BINS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 10), (11, None))


def recovered(found: np.ndarray, true: np.ndarray, binary: np.ndarray, tolerance: float = TOLERANCE) -> np.ndarray:
    """True where ``found`` is within ``tolerance`` (1 %) of the true period, or of half of it for binaries."""
    ok = np.abs(found / true - 1) < tolerance
    half = np.abs(2 * found / true - 1) < tolerance
    return ok | (binary & half)


def eclipses_seen(time: np.ndarray, err: np.ndarray, truth) -> np.ndarray:
    """Distinct eclipses (primary or secondary) holding an epoch at least 5 sigma deep, from the true orbit.

    Parameters
    ----------
    time, err : float arrays (n, m)
        NaN-padded cleaned epochs and errors of simulated EA.
    truth : pandas.DataFrame
        Their rows of the simulation's truth table (period, t0, eclipse_width, secondary_phase,
        depth_primary, depth_secondary), in the same order.

    Returns
    -------
    int array (n,)
    """
    col = lambda name: truth[name].to_numpy(np.float64)[:, None]  # noqa: E731
    cycle = (time - col("t0")) / col("period")
    x1 = (cycle + 0.5) % 1.0 - 0.5
    x2 = (cycle - col("secondary_phase") + 0.5) % 1.0 - 0.5
    f1, f2 = 1 - 10 ** (-0.4 * col("depth_primary")), 1 - 10 ** (-0.4 * col("depth_secondary"))
    shape = lambda x: np.sqrt(np.clip(1 - (x / col("eclipse_width")) ** 2, 0, None))  # noqa: E731
    depth = -2.5 * np.log10(1 - f1 * shape(x1) - f2 * shape(x2))
    deep = (depth > 5 * err) & ((np.abs(x1) < col("eclipse_width")) | (np.abs(x2) < col("eclipse_width")))
    label = np.where(np.abs(x1) < col("eclipse_width"), np.round(cycle), np.round(cycle - col("secondary_phase")) + 0.5)
    return np.array([len(np.unique(label[i][deep[i]])) for i in range(len(time))])


def main() -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="simulated sources (default 1000)")
    parser.add_argument("--n-astropy", type=int, default=100, help="curves timed with astropy (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="override constants of latentcat.features.period or .eclipse, e.g. N_ALIGN=1024")
    args = parser.parse_args()
    for item in args.set:
        name, _, value = item.partition("=")
        module = next((m for m in (period_search, eclipse) if hasattr(m, name)), None)
        if module is None:
            raise SystemExit(f"--set {item}: latentcat.features.period and .eclipse have no {name}")
        setattr(module, name, type(getattr(module, name))(value))

    from latentcat.gaia.ingest import ingest
    from latentcat.gaia.simulate import simulate_survey

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        simulate_survey(n=args.n, seed=args.seed, out=tmp)
        ingest([tmp / "archive"], tmp / "stage")
        truth = pq.read_table(tmp / "truth.parquet").to_pandas().set_index("source_id")

        # ---- whole feature step
        t0 = time.perf_counter()
        report = extract_features(tmp / "stage", tmp / "features", n_workers=1)
        whole = report["n_sources"] / (time.perf_counter() - t0)
        feats = pq.read_table(tmp / "features").to_pandas().set_index("source_id")

        # ---- period search alone vs astropy, on the same cleaned curves
        lc = pq.read_table(tmp / "stage" / "light_curves.parquet")
        time_ = pad_lists(lc["g_time"], np.float64)
        mag = pad_lists(lc["g_mag"], np.float64)
        err = pad_lists(lc["g_mag_err"], np.float64)
        n_obs, (time_, mag, err) = compact(clean_mask(mag, err), time_, mag, err)
        is_ea = truth.loc[lc["source_id"].to_numpy(), "class"].to_numpy() == "EA"
        seen = pd.Series(
            eclipses_seen(time_[is_ea], err[is_ea], truth.loc[lc["source_id"].to_numpy()[is_ea]]),
            index=lc["source_id"].to_numpy()[is_ea],
        )
        use = np.flatnonzero(n_obs >= 10)[: args.n_astropy]
        t0 = time.perf_counter()
        ours = period_search.find_periods(time_[use], mag[use], err[use])
        ours_rate = len(use) / (time.perf_counter() - t0)
        from astropy.timeseries import LombScargle

        astro_period = np.empty(len(use))
        t0 = time.perf_counter()
        for i, k in enumerate(use):
            L = n_obs[k]
            freq, power = LombScargle(time_[k, :L], mag[k, :L], err[k, :L]).autopower(
                minimum_frequency=period_search.FMIN, maximum_frequency=period_search.FMAX
            )
            astro_period[i] = 1 / freq[np.argmax(power)]
        astro_rate = len(use) / (time.perf_counter() - t0)

    sid = lc["source_id"].to_numpy()[use]
    true_p = truth.loc[sid, "period"].to_numpy()
    is_bin = truth.loc[sid, "class"].isin(["EA", "EB", "EW", "ELL"]).to_numpy()
    periodic = np.isfinite(true_p)

    print(f"\nFeature stage, {args.n} simulated sources (seed {args.seed}), one core\n")
    print(f"{'step':<52}{'curves/s/core':>14}")
    print(f"{'period search, latentcat (NUFFT + eclipse search)':<52}{ours_rate:>14.1f}")
    print(f"{'period search, astropy LombScargle.autopower':<52}{astro_rate:>14.1f}")
    print(f"{'ratio latentcat / astropy':<52}{ours_rate / astro_rate:>14.1f}")
    print(f"{'whole feature step (extract_features, 1 worker)':<52}{whole:>14.1f}")
    print(f"  ({len(use)} curves timed for the period search; {report['n_sources']} for the whole step)")
    if periodic.any():
        r_ours = recovered(ours["period"][periodic], true_p[periodic], is_bin[periodic]).mean()
        r_astro = recovered(astro_period[periodic], true_p[periodic], is_bin[periodic]).mean()
        print(f"  recovery within 1 % on those {periodic.sum()} periodic curves: latentcat {r_ours:.1%}, astropy {r_astro:.1%}")

    sel = feats.join(truth[["class", "period", "mean_g"]].rename(columns={"period": "period_true"}))
    sel = sel[(sel["n_obs"] >= 40) & (sel["mean_g"] < 18)]
    print(f"\nPeriod recovery within {TOLERANCE:.0%} (>= 40 cleaned epochs, G < 18; binaries: P or P/2)\n")
    print(f"{'class':<12}{'sources':>8}{'recovered':>11}")
    for name, classes in {**PULSATORS, **BINARIES}.items():
        rows = sel[sel["class"].isin(classes)]
        if len(rows) == 0:
            print(f"{name:<12}{0:>8}{'-':>11}")
            continue
        ok = recovered(rows["period"].to_numpy(), rows["period_true"].to_numpy(), np.full(len(rows), name in BINARIES))
        print(f"{name:<12}{len(rows):>8}{ok.mean():>11.1%}")
    ecl = sel[sel["class"].isin(["EA", "EB", "EW"])]
    if len(ecl):
        ok = recovered(ecl["period"].to_numpy(), ecl["period_true"].to_numpy(), np.ones(len(ecl), bool))
        print(f"{'EA+EB+EW':<12}{len(ecl):>8}{ok.mean():>11.1%}")

    ea = sel[sel["class"] == "EA"]
    if len(ea):
        ok = pd.Series(recovered(ea["period"].to_numpy(), ea["period_true"].to_numpy(), np.ones(len(ea), bool)), index=ea.index)
        n_seen = seen.loc[ea.index]
        print("\nEA by distinct eclipses observed (an epoch >= 5 sigma deep, true orbit)\n")
        print(f"{'eclipses':<12}{'sources':>8}{'recovered':>11}")
        for lo, hi in SEEN_BINS:
            rows = (n_seen >= lo) & ((n_seen <= hi) if hi is not None else True)
            label = f"{lo}-{hi}" if hi is not None else f">= {lo}"
            print(f"{label:<12}{int(rows.sum()):>8}{(f'{ok[rows].mean():.1%}' if rows.any() else '-'):>11}")

    reliability_table(sel)


def reliability_table(sel: pd.DataFrame) -> None:
    """5.: the reliability flag per class on the selected sources, beside its targets."""
    print("\nperiod_reliable per class (same sources): flagged, precision of the flag, right periods flagged\n")
    print(f"{'class':<12}{'sources':>8}{'flagged':>9}{'precision':>11}{'right flagged':>15}   targets")
    groups = {**PULSATORS, **BINARIES, "DSCT": ("DSCT",), "Mira": ("MIRA",), "red noise": ("QSO", "YSO")}
    for name, classes in groups.items():
        rows = sel[sel["class"].isin(classes)]
        if len(rows) == 0:
            continue
        flagged = rows["period_reliable"].to_numpy(bool)
        checks = []
        if name == "red noise":
            checks.append(f"flagged <= 5%: {'met' if flagged.mean() <= 0.05 else 'NOT met'}")
            print(f"{name:<12}{len(rows):>8}{flagged.mean():>9.1%}{'-':>11}{'-':>15}   {'; '.join(checks)}")
            continue
        right = recovered(rows["period"].to_numpy(), rows["period_true"].to_numpy(), np.full(len(rows), name in BINARIES),
                          0.1 if name == "Mira" else TOLERANCE)
        precision = (flagged & right).sum() / max(1, flagged.sum())
        recall = (flagged & right).sum() / max(1, right.sum())
        checks.append(f"precision >= 95%: {'met' if precision >= 0.95 else 'NOT met'}")
        if name in ("EA", "EB", "EW"):
            checks.append(f"right flagged >= 90%: {'met' if recall >= 0.9 else 'NOT met'}")
        print(f"{name:<12}{len(rows):>8}{flagged.mean():>9.1%}{precision:>11.1%}{recall:>15.1%}   {'; '.join(checks)}")


if __name__ == "__main__":
    main()
