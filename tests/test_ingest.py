"""The ingest stage on real Gaia DR3 products: rules, layouts, duplicates, bad inputs, atomic output."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from astropy.table import Table

from latentcat.errors import InputError
from latentcat.gaia.ingest import ingest

DATA = Path(__file__).parent / "data" / "gaia_dr3"
VOT = DATA / "epoch_photometry_datalink_8_sources.vot.xml"
LABELS = DATA / "epoch_photometry_8_sources_labels.csv"
SID = 1302439147363430272
WIDE = {"G": ("g_transit_time", "g_transit_mag", "g_transit_flux", "g_transit_flux_error", "variability_flag_g_reject"),
        "BP": ("bp_obs_time", "bp_mag", "bp_flux", "bp_flux_error", "variability_flag_bp_reject"),
        "RP": ("rp_obs_time", "rp_mag", "rp_flux", "rp_flux_error", "variability_flag_rp_reject")}


@pytest.fixture(scope="module")
def reference():
    """The DataLink VOTable as astropy reads it."""
    t = Table.read(VOT, format="votable")
    t["band"] = t["band"].astype(str)
    return t


@pytest.fixture(scope="module")
def long_stage(tmp_path_factory):
    out = tmp_path_factory.mktemp("long") / "stage"
    report = ingest([VOT, LABELS], out)
    return out, report


def _lc(out: Path) -> pa.Table:
    return pq.read_table(out / "light_curves.parquet")


def test_rules_against_astropy_counts(long_stage, reference):
    out, report = long_stage
    assert sorted(p.name for p in out.iterdir()) == ["ingest_report.json", "labels.parquet",
                                                     "light_curves.parquet", "sources.parquet"]
    assert json.loads((out / "ingest_report.json").read_text()) == report
    assert report["tables_not_written"] == {"xp": "no input had this kind of data"}
    entry = report["inputs"][0]
    assert entry["layout"] == ["epoch_long"] and entry["rows"] == len(reference) and entry["sources"] == 8
    assert entry["dropped"] == {"rejected_by_photometry": int(np.sum(reference["rejected_by_photometry"])),
                                "rejected_by_variability": int(np.sum(reference["rejected_by_variability"])),
                                "nan": 0, "non_positive_error": 0}
    lc = _lc(out).to_pylist()
    row = next(r for r in lc if r["source_id"] == SID)
    keep = (reference["source_id"] == SID) & (reference["band"] == "G") & ~reference["rejected_by_variability"]
    assert row["n_g"] == len(row["g_time"]) == int(keep.sum())
    order = np.argsort(reference["time"][keep])
    np.testing.assert_array_equal(row["g_time"], np.asarray(reference["time"][keep])[order])
    np.testing.assert_allclose(row["g_mag"], np.asarray(reference["mag"][keep])[order], rtol=1e-6)
    mag_err = 1.0857 * reference["flux_error"][keep] / reference["flux"][keep]
    np.testing.assert_allclose(row["g_mag_err"], np.asarray(mag_err)[order], rtol=1e-4)
    for r in lc:
        for band in ("g", "bp", "rp"):
            assert np.all(np.diff(r[f"{band}_time"]) > 0)
            assert r[f"n_{band}"] == len(r[f"{band}_mag"]) == len(r[f"{band}_mag_err"])
    schema = _lc(out).schema
    assert schema.field("n_g").type == pa.int32() and schema.field("g_mag").type == pa.list_(pa.float32())
    assert schema.field("g_time").type.value_type == pa.float64()


def test_keep_variability_rejected(tmp_path, reference):
    report = ingest([VOT], tmp_path / "stage", keep_variability_rejected=True)
    assert report["inputs"][0]["dropped"]["rejected_by_variability"] == 0
    lc = _lc(tmp_path / "stage")
    total = sum(pc.sum(lc[f"n_{b}"]).as_py() for b in ("g", "bp", "rp"))
    assert total == len(reference)


def test_labels_csv_is_split_into_sources_and_labels(long_stage):
    out, _ = long_stage
    ref = Table.read(LABELS)
    src = pq.read_table(out / "sources.parquet").sort_by("source_id")
    lab = pq.read_table(out / "labels.parquet").sort_by("source_id")
    ref.sort("source_id")
    assert src.column_names == ["source_id", "ra", "dec", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"]
    np.testing.assert_array_equal(src["ra"].to_numpy(), np.asarray(ref["ra"]))
    assert lab.column_names == ["source_id", "best_class_name", "best_class_score"]
    assert lab["best_class_name"].to_pylist() == list(ref["best_class_name"])
    assert lab["best_class_name"].to_pylist().count("YSO") == 1


def _wide_per_transit(reference: Table) -> pa.Table:
    """The DataLink rows pivoted to the epoch_photometry table's one-row-per-transit layout."""
    long = pa.table({c: np.asarray(reference[c]) for c in reference.colnames})
    merged = None
    for band, (t, m, fx, fe, var) in WIDE.items():
        part = long.filter(pc.equal(long["band"], band)).select(
            ["source_id", "transit_id", "time", "mag", "flux", "flux_error", "rejected_by_variability"]
        ).rename_columns(["source_id", "transit_id", t, m, fx, fe, var])
        merged = part if merged is None else merged.join(part, ["source_id", "transit_id"], join_type="full outer")
    merged = merged.append_column("rejected_by_photometry", pa.array(np.zeros(merged.num_rows, bool)))
    return merged.sort_by([("source_id", "ascending"), ("transit_id", "ascending")])


def _bulk(per_transit: pa.Table) -> pa.Table:
    """One row per source with array columns, as the archive's bulk files and the simulator have."""
    cols = [c for c in per_transit.column_names if c != "source_id"]
    grouped = per_transit.group_by("source_id", use_threads=False).aggregate([(c, "list") for c in cols])
    return grouped.rename_columns(["source_id"] + cols)


def _write_text_arrays(table: pa.Table, path: Path) -> None:
    """Gzipped CSV with arrays written as text, in both archive spellings."""
    with gzip.open(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(table.column_names)
        for i, row in enumerate(table.to_pylist()):
            cells = []
            for v in row.values():
                if isinstance(v, list):
                    items = ["null" if x is None else repr(x).lower() if isinstance(x, bool) else repr(x) for x in v]
                    cells.append(("[%s]" if i % 2 else "(%s)") % ", ".join(items))
                else:
                    cells.append(v)
            w.writerow(cells)


def test_wide_and_bulk_layouts_give_the_same_light_curves(tmp_path, long_stage, reference):
    expected = _lc(long_stage[0])
    per_transit = _wide_per_transit(reference)
    bulk = _bulk(per_transit)
    pq.write_table(per_transit, tmp_path / "per_transit.parquet")
    pq.write_table(bulk, tmp_path / "bulk.parquet")
    _write_text_arrays(bulk, tmp_path / "EpochPhotometry_000-001.csv.gz")
    for name in ("per_transit.parquet", "bulk.parquet", "EpochPhotometry_000-001.csv.gz"):
        report = ingest([tmp_path / name], tmp_path / name.replace(".", "_"), chunk_rows=300)
        entry = report["inputs"][0]
        assert entry["layout"] == ["epoch_wide"]
        assert entry["dropped"] == {"rejected_by_photometry": 0, "rejected_by_variability": 6, "nan": 0, "non_positive_error": 0}
        got = _lc(tmp_path / name.replace(".", "_"))
        assert got.cast(expected.schema).equals(expected), name


def test_gaia_source_columns_beside_epochs_become_sources_rows(tmp_path, reference):
    """ra/dec repeated on every epoch row give one sources row per source; unread columns are listed."""
    ref = Table.read(LABELS)
    pos = {sid: (ra, dec, cls) for sid, ra, dec, cls in zip(ref["source_id"], ref["ra"], ref["dec"], ref["best_class_name"])}
    long = pa.table({c: np.asarray(reference[c]) for c in reference.colnames})
    rows = [pos[sid] for sid in long["source_id"].to_pylist()]
    for i, name in enumerate(("ra", "dec", "best_class_name")):
        long = long.append_column(name, pa.array([r[i] for r in rows]))
    pq.write_table(long, tmp_path / "epochs_with_positions.parquet")
    report = ingest([tmp_path / "epochs_with_positions.parquet"], tmp_path / "stage", chunk_rows=1000)
    entry = report["inputs"][0]
    assert entry["layout"] == ["epoch_long", "sources"] and entry["sources"] == 8
    assert {"best_class_name", "transit_id"} <= set(entry["ignored_columns"])
    src = pq.read_table(tmp_path / "stage" / "sources.parquet")
    assert src.column_names == ["source_id", "ra", "dec"]
    ref.sort("source_id")
    assert src["source_id"].to_pylist() == list(ref["source_id"])
    np.testing.assert_array_equal(src["ra"].to_numpy(), np.asarray(ref["ra"]))
    # rows of one batch are written once; a source cut by a batch boundary is merged like a duplicate
    assert report["duplicates"]["sources"] <= len(reference) // 1000


def test_same_source_in_two_inputs_is_merged_once(tmp_path, long_stage):
    twin = tmp_path / "copy"
    twin.mkdir()
    shutil.copy(VOT, twin / "again.vot")
    half = Table.read(LABELS)[:4]
    half.write(twin / "labels_half.ecsv", format="ascii.ecsv")
    report = ingest([VOT, LABELS, twin], tmp_path / "stage", chunk_rows=100)
    expected = _lc(long_stage[0])
    assert _lc(tmp_path / "stage").cast(expected.schema).equals(expected)
    kept = sum(e["rows"] - sum(e["dropped"].values()) for e in report["inputs"] if "dropped" in e) // 2
    assert report["duplicates"]["light_curve_epochs"] == kept
    assert report["duplicates"]["light_curve_sources"] == 8
    assert report["duplicates"]["labels"] == 4
    assert pq.read_table(tmp_path / "stage" / "labels.parquet").num_rows == 8


def test_conflicting_labels_name_source_and_both_files(tmp_path):
    other = Table.read(LABELS)
    other["best_class_name"][0] = "RR"
    other.write(tmp_path / "mine.csv")
    with pytest.raises(InputError, match=rf"source_id {other['source_id'][0]}: .*best_class_name.*"
                                         rf"epoch_photometry_8_sources_labels\.csv and .*mine\.csv"):
        ingest([LABELS, tmp_path / "mine.csv"], tmp_path / "stage")
    assert not (tmp_path / "stage").exists()


def test_xp_bundles_and_formats_agree(tmp_path):
    bundles = [DATA / f"gaia_dr3_source_id_5937083312263887616_dl_products_{k}.zip" for k in ("csv", "ecsv", "fits", "vot")]
    report = ingest(bundles + [DATA / "XP_CONTINUOUS_RAW_with_missing_BP.ecsv"], tmp_path / "stage")
    products = sorted(s["product"] for s in report["skipped"])
    assert products == ["MCMC samples"] * 4 + ["XP_SAMPLED"] * 4
    xp = pq.read_table(tmp_path / "stage" / "xp.parquet")
    assert xp.num_rows == 4 and report["duplicates"]["xp"] == 3
    missing = Table.read(DATA / "XP_CONTINUOUS_RAW_with_missing_BP.ecsv")
    no_bp = int(missing["source_id"][1])
    row = xp.filter(pc.equal(xp["source_id"], no_bp)).to_pylist()[0]
    assert row["bp_flux"] is None and len(row["rp_flux"]) == 55
    assert sorted(report["tables"]) == ["xp"]


def test_xp_sampled_alone_asks_for_xp_continuous(tmp_path):
    shutil.unpack_archive(DATA / "gaia_dr3_source_id_5937083312263887616_dl_products_csv.zip", tmp_path / "x")
    sampled = next((tmp_path / "x").glob("XP_SAMPLED*"))
    with pytest.raises(InputError, match="XP_SAMPLED.*fetch the XP_CONTINUOUS"):
        ingest([sampled], tmp_path / "stage")


def _truncated_vot(tmp_path):
    p = tmp_path / "cut.vot"
    p.write_bytes(VOT.read_bytes()[:200_000])
    return p


def _truncated_gzip(tmp_path):
    p = tmp_path / "cut.csv.gz"
    p.write_bytes(gzip.compress(LABELS.read_bytes())[:-30])
    return p


def _unknown(tmp_path):
    p = tmp_path / "odd.csv"
    p.write_text("source_id,foo,bar\n1,2,3\n")
    return p


def _time_as_text(tmp_path):
    t = Table.read(VOT, format="votable")[:20]
    t["band"] = t["band"].astype(str)
    t["time"] = [f"2016-05-{i + 1:02d}" for i in range(20)]
    p = tmp_path / "texttime.ecsv"
    t.write(p, format="ascii.ecsv")
    return p


def _empty(tmp_path):
    p = tmp_path / "empty.parquet"
    p.write_bytes(b"")
    return p


def _header_only(tmp_path):
    p = tmp_path / "header.csv"
    p.write_text(LABELS.read_text().splitlines()[0] + "\n")
    return p


def _source_id_past_the_last_pixel(tmp_path):
    lines = LABELS.read_text().splitlines()
    lines[3] = "6917529027641081856" + lines[3][lines[3].index(","):]  # 12 * 4**12 * 2**35
    p = tmp_path / "badid.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def _source_id_zero(tmp_path):
    t = Table.read(VOT, format="votable")[:20]
    t["source_id"][4] = 0
    p = tmp_path / "zero.vot"
    t.write(p, format="votable")
    return p


def _corrupt_zip(tmp_path):
    p = tmp_path / "bundle.zip"
    raw = bytearray((DATA / "gaia_dr3_source_id_5937083312263887616_dl_products_csv.zip").read_bytes())
    raw[2000:2400] = b"\x00" * 400
    p.write_bytes(bytes(raw))
    return p


@pytest.mark.parametrize("make, message", [
    (_truncated_vot, r"cut\.vot: "),
    (_truncated_gzip, r"cut\.csv\.gz: "),
    (_unknown, r"odd\.csv: unknown layout \(columns: source_id, foo, bar\); expected one of: .*band, time"),
    (_time_as_text, r"texttime\.ecsv: column 'time', row 1: .*2016-05-01"),
    (_empty, r"empty\.parquet: empty file"),
    (_header_only, r"header\.csv: the table has no rows"),
    (_corrupt_zip, r"bundle\.zip: corrupt zip"),
    (_source_id_past_the_last_pixel,
     r"badid\.csv: column 'source_id', row 3: 6917529027641081856 is not a Gaia DR3 source_id \(must be above 0"),
    (_source_id_zero, r"zero\.vot: column 'source_id', row 5: 0 is not a Gaia DR3 source_id"),
])
def test_bad_input_names_the_file_and_leaves_the_stage_alone(tmp_path, make, message):
    stage = tmp_path / "stage"
    ingest([LABELS], stage)
    before = {p.name: p.read_bytes() for p in stage.iterdir()}
    bad = make(tmp_path)
    with pytest.raises(InputError, match=message) as info:
        ingest([VOT, bad], stage)
    assert "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in stage.iterdir()} == before


def test_new_ingest_replaces_the_whole_stage(tmp_path):
    stage = tmp_path / "stage"
    ingest([VOT, LABELS], stage)
    ingest([LABELS], stage)
    assert sorted(p.name for p in stage.iterdir()) == ["ingest_report.json", "labels.parquet", "sources.parquet"]


@pytest.fixture(scope="module")
def split_survey(tmp_path_factory):
    """A simulated survey, and the same survey with one source's epochs split over two files
    (overlapping by a few transits) and its first 20 sources repeated in a third file."""
    from latentcat.gaia.simulate import simulate_survey

    root = tmp_path_factory.mktemp("split")
    simulate_survey(100, 3, root / "whole")
    archive = root / "whole" / "archive"
    epochs = pq.read_table(archive / "EpochPhotometry_sim.parquet")
    row = epochs.slice(50, 1).to_pylist()[0]
    arrays = [c for c, v in row.items() if isinstance(v, list)]
    n = len(row["g_transit_time"])
    head = {**row, **{c: row[c][: n // 2 + 3] for c in arrays}}
    tail = {**row, **{c: row[c][n // 2 - 3:] for c in arrays}}
    split = root / "split"
    split.mkdir()
    for f in archive.iterdir():
        if f.name != "EpochPhotometry_sim.parquet":
            shutil.copy(f, split / f.name)
    first = pa.Table.from_pylist([head], schema=epochs.schema)
    pq.write_table(pa.concat_tables([epochs.slice(0, 50), first, epochs.slice(51)]), split / "epochs_a.parquet")
    again = pa.Table.from_pylist([tail], schema=epochs.schema)
    pq.write_table(pa.concat_tables([epochs.slice(0, 20), again]), split / "epochs_b.parquet")
    return archive, split, row["source_id"]


def _tables(stage: Path) -> dict:
    return {t: pq.read_table(stage / f"{t}.parquet") for t in ("light_curves", "xp", "sources", "labels")}


def test_merge_by_source_ranges_gives_the_same_tables(tmp_path, split_survey):
    archive, split, sid = split_survey
    ingest([archive], tmp_path / "whole")
    whole = _tables(tmp_path / "whole")
    default = ingest([split], tmp_path / "default")
    tiny = ingest([split], tmp_path / "tiny", chunk_rows=1000)
    a, b = _tables(tmp_path / "default"), _tables(tmp_path / "tiny")
    # the tiny budget really cut the merge into many source_id ranges (one row group each)
    assert pq.read_metadata(tmp_path / "default" / "light_curves.parquet").num_row_groups == 1
    assert pq.read_metadata(tmp_path / "tiny" / "light_curves.parquet").num_row_groups > 10
    for t in ("light_curves", "sources", "labels"):
        assert b[t].schema.equals(a[t].schema) and b[t].equals(a[t]), t
    # XP is converted per read batch, and the batch size changes the float32 rounding of the
    # propagated errors; the merge itself moves values unchanged
    assert b["xp"].schema.equals(a["xp"].schema)
    assert b["xp"].drop_columns(["bp_flux_error", "rp_flux_error"]).equals(
        a["xp"].drop_columns(["bp_flux_error", "rp_flux_error"]))
    for c in ("bp_flux_error", "rp_flux_error"):
        np.testing.assert_allclose(np.array([v for v in b["xp"][c].to_pylist() if v is not None]),
                                   np.array([v for v in a["xp"][c].to_pylist() if v is not None]), rtol=1e-6)
    assert tiny["duplicates"] == default["duplicates"]
    assert [e["sources"] for e in tiny["inputs"]] == [e["sources"] for e in default["inputs"]]
    # the split source and the 20 repeated ones are merged whole: the light curves are those of
    # the unsplit survey, one row per source, in source_id order
    for lc in (a["light_curves"], b["light_curves"]):
        assert lc.equals(whole["light_curves"])
        ids = lc["source_id"].to_numpy()
        assert np.all(np.diff(ids) > 0) and sid in ids
    assert default["duplicates"]["light_curve_sources"] == 21


def test_source_ranges_never_split_a_source(tmp_path):
    import duckdb

    from latentcat.gaia.ingest import source_ranges

    rng = np.random.default_rng(5)
    ids = np.sort(rng.choice(np.arange(10**15, 10**15 + 10**6), 300, replace=False))
    counts = rng.integers(1, 40, ids.size)
    counts[[7, 150]] = 400  # sources with more rows than a range holds
    rows = np.repeat(ids, counts)
    rng.shuffle(rows)  # unsorted files
    half = rows.size // 2
    pq.write_table(pa.table({"source_id": rows[:half]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"source_id": rows[half:], "x": np.zeros(rows.size - half)}), tmp_path / "b.parquet")
    budget = 100
    ranges = source_ranges(duckdb.connect(), [[str(tmp_path / "a.parquet")], [str(tmp_path / "b.parquet")]], budget)
    lo, hi = np.array(ranges).T
    assert lo[0] == ids[0] and hi[-1] == ids[-1]
    assert np.all(lo <= hi) and np.all(hi[:-1] < lo[1:])  # ascending and disjoint
    # every source lies in exactly one range, with all its rows
    where = np.searchsorted(lo, ids, side="right") - 1
    assert np.all(ids <= hi[where])
    per_range = np.bincount(where, weights=counts, minlength=len(ranges))
    last = counts[np.searchsorted(ids, hi, side="right") - 1]  # rows of each range's last source
    assert np.all(per_range < budget + last)
    assert per_range.sum() == rows.size and len(ranges) >= rows.size // (budget + 400)
    assert source_ranges(duckdb.connect(), [[str(tmp_path / "a.parquet")]], 10**9) == [(int(rows[:half].min()),
                                                                                         int(rows[:half].max()))]


def test_a_folder_without_any_table_file_is_an_error(tmp_path):
    from latentcat.errors import InputError
    from latentcat.gaia.ingest import ingest as run_ingest

    empty = tmp_path / "downloads"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here yet\n")
    with pytest.raises(InputError, match="downloads: no table files to ingest"):
        run_ingest([empty], tmp_path / "stage")
    assert not (tmp_path / "stage").exists()
