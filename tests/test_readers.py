"""Readers of Gaia DR3 archive products, checked against astropy's own reading of real files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from astropy.table import Table

from latentcat.errors import InputError
from latentcat.gaia.formats import InputFile, iter_batches, read_columns
from latentcat.gaia.inputs import find_inputs, sampled_spectrum_kind, sniff_format
from latentcat.gaia.layouts import (
    XP_COLUMNS, detect_layout, epoch_points, label_columns, parse_array_strings, source_columns,
    xp_coefficients,
)

DATA = Path(__file__).parent / "data" / "gaia_dr3"
VOT = DATA / "epoch_photometry_datalink_8_sources.vot.xml"
LABELS = DATA / "epoch_photometry_8_sources_labels.csv"
XP_FILES = ["XP_CONTINUOUS_RAW.csv", "XP_CONTINUOUS_RAW.ecsv", "XP_CONTINUOUS_RAW.fits", "XP_CONTINUOUS_RAW.xml"]


def _one(path: Path, tmp_path: Path) -> InputFile:
    files, _ = find_inputs([path], tmp_path / "work")
    assert len(files) == 1
    return files[0]


def _read_all(f: InputFile, rows: int = 10_000) -> pa.Table:
    return pa.concat_tables(iter_batches(f, rows))


@pytest.mark.parametrize("name, fmt", [(VOT.name, "votable"), (LABELS.name, "csv"), (XP_FILES[1], "ecsv"),
                                       (XP_FILES[2], "fits")])
def test_format_is_sniffed_from_content_even_when_renamed_and_gzipped(tmp_path, name, fmt):
    plain = sniff_format(DATA / name)
    assert plain == (fmt, False)
    hidden = tmp_path / "download.bin.gz"  # neither name nor extension says what it is
    with open(DATA / name, "rb") as src, gzip.open(hidden, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert sniff_format(hidden) == (fmt, True)


def test_long_layout_points_match_astropy(tmp_path):
    ref = Table.read(VOT, format="votable")
    f = _one(VOT, tmp_path)
    assert detect_layout(read_columns(f)) == {"epoch_long"}
    points = pa.concat_tables(epoch_points(b, "epoch_long", f.name) for b in iter_batches(f, 100))
    assert points.num_rows == len(ref)
    sid = 1302439147363430272
    g_ref = (ref["source_id"] == sid) & (ref["band"] == "G")
    pts_sid = points.filter(pa.compute.equal(points["source_id"], sid))
    g = pts_sid.filter(pa.compute.equal(pts_sid["band"], 0))
    assert g.num_rows == int(g_ref.sum()) == 99
    # magnitude error from the flux error: 2.5/ln(10) * flux_error / flux
    expected = 2.5 / np.log(10) * np.asarray(ref["flux_error"][g_ref]) / np.asarray(ref["flux"][g_ref])
    np.testing.assert_allclose(np.sort(g["mag_err"].to_numpy()), np.sort(expected), rtol=1e-12)
    assert points["rejected_by_variability"].to_numpy(zero_copy_only=False).sum() == int(
        np.sum(ref["rejected_by_variability"]))


@pytest.mark.parametrize("name", XP_FILES)
def test_xp_continuous_in_every_format_gives_the_archive_values(tmp_path, name):
    ref = Table.read(DATA / "XP_CONTINUOUS_RAW.fits")
    f = _one(DATA / name, tmp_path)
    assert detect_layout(read_columns(f)) == {"xp_continuous"}
    xp = xp_coefficients(_read_all(f), f.name)
    assert xp.schema == pa.schema(list(XP_COLUMNS.items()))
    assert xp["source_id"].to_pylist() == list(ref["source_id"])
    for band in ("bp", "rp"):
        np.testing.assert_array_equal(np.array(xp[f"{band}_coefficients"].to_pylist()),
                                      np.array([np.asarray(v, float) for v in ref[f"{band}_coefficients"]]))
        np.testing.assert_array_equal(np.array(xp[f"{band}_coefficient_correlations"].to_pylist(), np.float32),
                                      np.array([np.asarray(v, np.float32) for v in ref[f"{band}_coefficient_correlations"]]))
        assert xp[f"{band}_n_relevant_bases"].to_pylist() == list(ref[f"{band}_n_relevant_bases"])


@pytest.mark.parametrize("name", ["XP_CONTINUOUS_RAW_with_missing_BP.csv", "XP_CONTINUOUS_RAW_with_missing_BP.ecsv"])
def test_missing_bp_band_is_null_not_zero(tmp_path, name):
    f = _one(DATA / name, tmp_path)
    xp = xp_coefficients(_read_all(f), f.name)
    assert xp.num_rows == 3
    assert [v is None for v in xp["bp_coefficients"].to_pylist()] == [False, True, False]
    assert xp["bp_n_relevant_bases"][1].as_py() is None
    assert all(v is not None and len(v) == 55 for v in xp["rp_coefficients"].to_pylist())


def test_text_arrays_in_both_archive_spellings():
    arr = pa.array(["[1.0, 2.5, null]", "(3.0, NaN)", None, "[]", " [4e2] "])
    lists = parse_array_strings(arr, pa.float64()).to_pylist()
    assert lists[0] == [1.0, 2.5, None]
    assert lists[1][0] == 3.0 and np.isnan(lists[1][1])
    assert lists[2] is None and lists[3] is None
    assert lists[4] == [400.0]
    flags = parse_array_strings(pa.array(["[false, true]", "(True, False)"]), pa.bool_()).to_pylist()
    assert flags == [[False, True], [True, False]]


def test_datalink_zip_bundle_lists_its_products(tmp_path):
    zipped = DATA / "gaia_dr3_source_id_5937083312263887616_dl_products_vot.zip"
    files, ignored = find_inputs([zipped], tmp_path)
    assert ignored == []
    layouts = {f.name.split(":")[1].split("-")[0]: detect_layout(read_columns(f)) for f in files}
    assert layouts == {"MCMC_MSC": {"datalink_other"}, "XP_CONTINUOUS": {"xp_continuous"},
                       "XP_SAMPLED": {"xp_sampled"}}
    sampled = next(f for f in files if "XP_SAMPLED" in f.name)
    assert sampled_spectrum_kind(sampled) == "XP_SAMPLED"


def test_one_table_can_feed_sources_and_labels(tmp_path):
    f = _one(LABELS, tmp_path)
    assert detect_layout(read_columns(f)) == {"sources", "labels"}
    batch = _read_all(f)
    src = source_columns(batch, f.name)
    assert src.column_names == ["source_id", "ra", "dec", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"]
    assert src.schema.field("ra").type == pa.float64() and src.schema.field("phot_g_mean_mag").type == pa.float32()
    labels = label_columns(batch, f.name)
    ref = Table.read(LABELS)
    assert labels["best_class_name"].to_pylist() == list(ref["best_class_name"])


def test_bad_cell_names_file_column_and_row(tmp_path):
    bad = tmp_path / "lc.csv"
    ref = Table.read(VOT, format="votable")[:5]
    ref["time"] = ref["time"].astype(str)
    ref["time"][3] = "2016-01-01T00:00:00"
    ref.write(bad, format="csv")
    f = _one(bad, tmp_path)
    with pytest.raises(InputError, match=r"lc\.csv: column 'time', row 4: .*2016-01-01"):
        epoch_points(_read_all(f), "epoch_long", f.name)


def test_unknown_band_is_refused(tmp_path):
    bad = tmp_path / "lc.ecsv"
    ref = Table.read(VOT, format="votable")[:5]
    ref["band"] = ref["band"].astype(str)  # a plain text column, as the archive writes it
    ref["band"][2] = "V"
    ref.write(bad, format="ascii.ecsv")
    f = _one(bad, tmp_path)
    with pytest.raises(InputError, match=r"lc\.ecsv: column 'band', row 3: unknown band 'V'"):
        epoch_points(_read_all(f), "epoch_long", f.name)
