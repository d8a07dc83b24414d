"""`latentcat build` from real Gaia DR3 archive files, checked row by row against those files.

The inputs are the real DR3 products of tests/data (tests/data/PROVENANCE.md), copied into one
folder as a user would gather them:

* a DataLink EPOCH_PHOTOMETRY VOTable of 8 sources (long layout, 1,332 G/BP/RP epochs);
* XP continuous spectra: a VOTable of 2 sources, a CSV of 3 (the same 2 plus one without BP)
  and an astroquery DataLink bundle of a fourth (XP_CONTINUOUS beside XP_SAMPLED and MCMC_MSC);
* the gaia_source and vari_classifier_result rows of the 8 light-curve sources, as VOTables of
  the archive's TAP service.

The XP sources are not the light-curve sources and have no gaia_source row, so the catalogue
holds 12 sources: 8 with dm-dt and fold codes, 3 with an XP code and one (BP missing) with no
code at all. Everything expected below is read from the input files with astropy, not from
latentcat's staging tables.
"""

from __future__ import annotations

import io
import shutil
import warnings
import zipfile
from pathlib import Path

import faiss
import numpy as np
import pytest
from astropy.table import Table
from typer.testing import CliRunner

import latentcat
from latentcat.cli import app
from latentcat.errors import LatentcatError

DATA = Path(__file__).parent / "data"
EPOCHS = DATA / "gaia_dr3" / "epoch_photometry_datalink_8_sources.vot.xml"
XP_VOTABLE = DATA / "gaia_dr3" / "XP_CONTINUOUS_RAW.xml"
XP_CSV = DATA / "gaia_dr3" / "XP_CONTINUOUS_RAW_with_missing_BP.csv"
XP_BUNDLE = DATA / "gaia_dr3" / "gaia_dr3_source_id_5937083312263887616_dl_products_vot.zip"
GAIA_SOURCE = DATA / "archive_responses" / "tap_gaia_source.vot"
CLASSES = DATA / "archive_responses" / "tap_vari_classifier_result.vot"
INPUTS = (EPOCHS, XP_VOTABLE, XP_CSV, XP_BUNDLE, GAIA_SOURCE, CLASSES)

MIN_EPOCHS = 10

CONFIG = f"""
seed = 5

[inputs]
paths = ["inputs"]            # relative to this file

[features]
shard_size = 5                # 12 sources in 3 shards: no source may be lost or doubled between shards
workers = 1
min_epochs = {MIN_EPOCHS}

[models]
device = "cpu"
progress = false
threads = 1
# val_fraction stays at its default 0.1. No value of it splits both modalities here: the
# source_id hashes of the 3 XP sources are 0.10-0.27, those of the 8 light-curve sources
# 0.28-0.81; the trainer moves the source nearest the cut across it instead.

[models.xp]
max_epochs = 1
width = 16
blocks = 1

[models.dmdt]
max_epochs = 1
width = 16
blocks = 1

[models.fold]
max_epochs = 1
width = 8
gru_layers = 1

[analyse]
# off: the classifier needs two classes of at least 10 labelled sources with a code, and
# the fixtures' 8 labels are 7 SOLAR_LIKE and 1 YSO
classifier = ""
outliers = true
# off: the parametric map needs more than n_neighbors + 1 = 16 sources with every part;
# the fixtures give 8 light-curve sources and 3 XP sources
map = false

[output]
catalog = "unused"            # the test gives --out
"""


# --------------------------------------------------------------------------- the inputs, read with astropy


def _votable(source) -> Table:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unit strings astropy does not know
        return Table.read(source, format="votable")


def _floats(column) -> np.ndarray:
    return np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)


def _flags(column) -> np.ndarray:
    return np.ma.filled(np.ma.asarray(column, dtype=bool), False)


def _documented_cleaning(mag: np.ndarray, err: np.ndarray) -> np.ndarray:
    """The two rules of latentcat.features.clean's docstring, for one light curve: drop
    errors above max(median + 5 sigma_MAD, 3 median), then isolated faint points (more than
    5 sigma_MAD fainter than the median, and at most max(1, 2 % of the points) of them)."""
    def sigma(x: np.ndarray) -> float:
        return 1.4826 * float(np.median(np.abs(x - np.median(x))))

    bad_err = err > max(np.median(err) + 5.0 * sigma(err), 3.0 * np.median(err))
    good = mag[~bad_err]
    faint = ~bad_err & (mag > np.median(good) + 5.0 * sigma(good))
    if faint.sum() > max(1, int(np.floor(0.02 * len(mag)))):
        faint[:] = False  # a group of faint points is real variability
    return ~bad_err & ~faint


def _expected_light_curves() -> dict[int, dict]:
    """Per source of the epoch VOTable: its valid G epochs as latentcat's reader defines them
    (latentcat.gaia.ingest: not rejected_by_photometry, not rejected_by_variability, finite
    time, magnitude and error, error = 1.0857 flux_error / flux above 0), then the features
    of the cleaned curve."""
    t = _votable(EPOCHS)
    band = np.char.strip(np.asarray(t["band"], dtype=str))
    time, mag = _floats(t["time"]), _floats(t["mag"])
    with np.errstate(divide="ignore", invalid="ignore"):
        err = 2.5 / np.log(10.0) * _floats(t["flux_error"]) / _floats(t["flux"])
    valid = ((band == "G") & ~_flags(t["rejected_by_photometry"]) & ~_flags(t["rejected_by_variability"])
             & np.isfinite(time) & np.isfinite(mag) & np.isfinite(err) & (err > 0))
    sid = np.asarray(t["source_id"], np.int64)
    out = {}
    for s in np.unique(sid):
        rows = np.flatnonzero(valid & (sid == s))
        rows = rows[np.argsort(time[rows])]
        assert len(np.unique(time[rows])) == len(rows), "a repeated G epoch would make the count ambiguous"
        # the staging tables hold magnitudes and errors as float32 (docs/schemas.md)
        m = mag[rows].astype(np.float32).astype(np.float64)
        e = err[rows].astype(np.float32).astype(np.float64)
        keep = _documented_cleaning(m, e)
        out[int(s)] = {
            "n_valid": len(rows),
            "n_rejected_by_variability": int((_flags(t["rejected_by_variability"]) & (sid == s)).sum()),
            "n_obs": int(keep.sum()),
            "g_mean": float(m[keep].mean()),
            "time_span": float(time[rows][keep].max() - time[rows][keep].min()),
        }
    return out


def _band_present(cell) -> bool:
    """Whether an XP coefficient cell holds coefficients (an empty or masked cell is a missing band)."""
    if cell is np.ma.masked or cell is None:
        return False
    if isinstance(cell, str):
        return cell.strip() not in ("", "[]", "()")
    arr = np.ma.asarray(cell)
    return arr.size > 0 and not np.ma.getmaskarray(arr).all()


def _expected_xp() -> dict[int, tuple[bool, bool]]:
    """(has BP, has RP) per source over the three XP inputs."""
    tables = [_votable(XP_VOTABLE), Table.read(XP_CSV, format="ascii.csv")]
    with zipfile.ZipFile(XP_BUNDLE) as bundle:
        tables += [_votable(io.BytesIO(bundle.read(n))) for n in bundle.namelist() if n.startswith("XP_CONTINUOUS")]
    out: dict[int, tuple[bool, bool]] = {}
    for t in tables:
        for row in t:
            s = int(row["source_id"])
            bp, rp = _band_present(row["bp_coefficients"]), _band_present(row["rp_coefficients"])
            before = out.get(s, (False, False))
            out[s] = (before[0] or bp, before[1] or rp)
    return out


# --------------------------------------------------------------------------- the build


@pytest.fixture(scope="module")
def archive_build(tmp_path_factory) -> dict:
    """Build the catalogue once, through the command line, from a folder of the input files."""
    root = tmp_path_factory.mktemp("archive_build")
    (root / "inputs").mkdir()
    for path in INPUTS:
        shutil.copy(path, root / "inputs" / path.name)
    config = root / "archive.toml"
    config.write_text(CONFIG)
    out = root / "catalogue"
    result = CliRunner().invoke(app, ["build", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {"out": out, "output": result.output, "lc": _expected_light_curves(), "xp": _expected_xp(),
            "gaia_source": _votable(GAIA_SOURCE), "classes": _votable(CLASSES)}


@pytest.fixture(scope="module")
def cat(archive_build):
    with latentcat.open(archive_build["out"]) as catalogue:
        yield catalogue


def _rows(cat, query: str) -> dict[int, dict]:
    return {r["source_id"]: r for r in cat.sql(query).to_pylist()}


def test_build_writes_a_complete_catalogue_folder(archive_build):
    out = archive_build["out"]
    assert f"catalogue: {out}" in archive_build["output"]
    assert not out.with_name(out.name + ".partial").exists()
    for name in ("catalog.duckdb", "index", "models", "features", "embeddings", "embeddings_hats"):
        assert (out / name).exists(), name
    assert not (out / "stage").exists()


def test_every_input_source_is_in_the_catalogue_once(archive_build, cat):
    lc, xp = archive_build["lc"], archive_build["xp"]
    listed = {int(s) for s in archive_build["gaia_source"]["source_id"]} | {int(s) for s in archive_build["classes"]["source_id"]}
    every = set(lc) | set(xp) | listed
    assert len(lc) == 8 and len(xp) == 4 and len(every) == 12
    for table in ("sources", "features", "embeddings"):
        counts = cat.sql(f"SELECT count(*) AS n, count(DISTINCT source_id) AS d FROM {table}").to_pylist()[0]
        ids = set(cat.sql(f"SELECT source_id FROM {table}").column("source_id").to_pylist())
        assert counts["n"] == counts["d"] == 12 and ids == every, table
    info = cat.info()["build_info"]
    assert info["counts"]["sources"] == 12 and info["embeddings_hats"]["rows"] == 12
    assert set(info["inputs"]) == {str((archive_build["out"].parent / "inputs" / p.name).resolve()) for p in INPUTS}


def test_gaia_source_columns_and_classes_are_the_inputs(archive_build, cat):
    sources = _rows(cat, "SELECT * FROM sources")
    gaia = archive_build["gaia_source"]
    assert len(gaia) == 8
    for row in gaia:
        got = sources[int(row["source_id"])]
        assert got["ra"] == float(row["ra"]) and got["dec"] == float(row["dec"])  # float64, exact
        for col in ("phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"):  # float32 in the archive
            assert np.float32(got[col]) == np.float32(row[col]), col
    # the inputs hold no bp_rp, parallax, ... and nothing is computed in their place
    assert all(r["bp_rp"] is None and r["parallax"] is None and r["ruwe"] is None for r in sources.values())
    # a source with data but no gaia_source row is kept, its gaia_source columns unknown
    bare = set(sources) - {int(s) for s in gaia["source_id"]}
    assert bare == set(archive_build["xp"])
    assert all(sources[s]["ra"] is None and sources[s]["phot_g_mean_mag"] is None for s in bare)

    labels = _rows(cat, "SELECT * FROM labels")
    classes = archive_build["classes"]
    assert {s: r["best_class_name"] for s, r in labels.items()} == {
        int(r["source_id"]): str(r["best_class_name"]).strip() for r in classes}
    assert all(r["best_class_score"] is None for r in labels.values())  # not in the input


def test_epoch_counts_and_g_statistics_follow_the_votable(archive_build, cat):
    features = _rows(cat, "SELECT * FROM features")
    lc = archive_build["lc"]
    for s, want in lc.items():
        got = features[s]
        assert got["n_obs"] + got["n_clipped"] == want["n_valid"], s
        assert got["n_obs"] == want["n_obs"], s
        assert got["lc_reason"] is None
        assert got["g_mean"] == pytest.approx(want["g_mean"], abs=2e-5), s
        assert got["time_span"] == pytest.approx(want["time_span"], rel=1e-6), s
    for s in set(features) - set(lc):
        assert features[s]["n_obs"] == 0 and features[s]["g_mean"] is None
        assert features[s]["lc_reason"] == "no_light_curve"
    # what ingest dropped is what the VOTable flags
    ingest = cat.info()["build_info"]["stages"]["ingest"]
    entry = next(e for e in ingest["inputs"] if e["file"].endswith(EPOCHS.name))
    assert entry["rows"] == 1332 and entry["sources"] == 8
    assert entry["dropped"]["rejected_by_variability"] == sum(w["n_rejected_by_variability"] for w in lc.values())
    assert sorted(s["product"] for s in ingest["skipped"]) == ["MCMC samples", "XP_SAMPLED"]
    assert ingest["duplicates"]["xp"] == 2  # the VOTable's 2 sources again in the CSV, agreeing


def test_modality_flags_follow_the_inputs(archive_build, cat):
    emb = _rows(cat, "SELECT source_id, has_xp, has_dmdt, has_fold, z FROM embeddings")
    features = _rows(cat, "SELECT source_id, xp_reason FROM features")
    lc, xp = archive_build["lc"], archive_build["xp"]
    for s, row in emb.items():
        bp, rp = xp.get(s, (False, False))
        assert row["has_xp"] == (bp and rp), s
        light_curve = s in lc and lc[s]["n_obs"] >= MIN_EPOCHS and lc[s]["time_span"] > 0
        assert row["has_dmdt"] == row["has_fold"] == light_curve, s
        assert row["z"] is None  # no source has all three blocks
        want_reason = None if bp and rp else "missing_bp" if rp else "missing_rp" if bp else "no_xp"
        assert features[s]["xp_reason"] == want_reason, s
    assert sum(r["has_xp"] for r in emb.values()) == 3 and sum(r["has_fold"] for r in emb.values()) == 8
    trained = cat.info()["build_info"]["stages"]["train"]["models"]
    for modality, n in (("xp", 3), ("dmdt", 8), ("fold", 8)):
        report = trained[modality]
        assert report["epochs"] == 1 and report["n_train"] + report["n_val"] == n
        assert report["n_train"] >= 1 and report["n_val"] >= 1


def _space_vector(row: dict, parts: list[str]) -> np.ndarray:
    return np.concatenate([np.asarray(row[f"s_{p}"], np.float32) for p in parts])[None, :]


def test_every_code_is_indexed_and_finds_itself(archive_build, cat):
    out = archive_build["out"]
    space = _rows(cat, "SELECT * FROM space")
    coded = {s for s, r in space.items() if r["parts"]}
    assert len(coded) == 11  # all but the source without BP
    indexes = cat.info()["build_info"]["indexes"]
    in_space_index: set[int] = set()
    for key, meta in indexes.items():
        index = faiss.read_index(str(out / meta["file"]))
        ids = faiss.vector_to_array(index.id_map)
        assert len(ids) == len(set(ids)) == index.ntotal == meta["n"], key
        if not key.startswith("space:"):
            blocks = key.split("+")
            want = set(cat.sql("SELECT source_id FROM embeddings WHERE " + " AND ".join(f"has_{b}" for b in blocks))
                       .column("source_id").to_pylist())
            assert set(ids.tolist()) == want, key
            continue
        parts = key.removeprefix("space:").split("+")
        assert set(ids.tolist()) == {s for s in coded if set(parts) <= set(space[s]["parts"].split("+"))}, key
        in_space_index |= set(ids.tolist())
        for s in ids.tolist():  # each source's own vector finds itself first, at distance 0
            dist, found = index.search(_space_vector(space[s], parts), min(index.ntotal, 3))
            assert found[0][0] == s and dist[0][0] == pytest.approx(0.0, abs=1e-6), (key, s)
    assert in_space_index == coded

    for s in sorted(coded):
        same = {o for o in coded if o != s and set(space[s]["parts"].split("+")) <= set(space[o]["parts"].split("+"))}
        sql = cat.sql(f"SELECT source_id FROM similar_to({s}, 20)").column("source_id").to_pylist()
        assert set(sql) == same and s not in sql  # the query source itself is left out by design
        faiss_path = cat.similar(s, k=20, with_meta=False).column("source_id").to_pylist()
        assert faiss_path == sql, s
    no_code = (set(space) - coded).pop()
    assert cat.sql(f"SELECT * FROM similar_to({no_code}, 5)").num_rows == 0
    with pytest.raises(LatentcatError, match="has no latent code"):
        cat.similar(no_code, k=5)

    scores = cat.sql("SELECT method, count(*) AS n, count(DISTINCT source_id) AS d FROM outlier_scores GROUP BY 1").to_pylist()
    assert {r["method"]: (r["n"], r["d"]) for r in scores} == {"isolation_forest:space": (11, 11), "recon_loss:all": (11, 11)}


def test_a_few_sources_still_get_a_training_and_a_validation_split():
    """The source_id-hash split of a handful of sources can fall all on one side (the XP and
    light-curve sources above do, for any val_fraction); the source nearest the cut crosses it."""
    from latentcat.models.trainer import validation_cut

    def split(hashes, fraction):
        cut = validation_cut(np.array(hashes), fraction)
        return sorted(h for h in hashes if h < cut), sorted(h for h in hashes if h >= cut)

    assert split([0.3, 0.5, 0.9], 0.1) == ([0.3], [0.5, 0.9])  # none below the cut: the smallest is validated
    assert split([0.01, 0.02, 0.05], 0.1) == ([0.01, 0.02], [0.05])  # all below: the largest is trained on
    assert split([0.05, 0.5], 0.1) == ([0.05], [0.5])  # both sides filled: the configured fraction
    assert validation_cut(np.array([0.5]), 0.1) == 0.1  # one source: the trainer refuses it
