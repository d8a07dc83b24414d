"""HATS catalogues: real DR3 light curves in through LSDB-written catalogues, embeddings out for LSDB.

The input catalogues are written by LSDB itself (``lsdb.from_dataframe(...).write_catalog``) from
the real DataLink light curves of tests/data/gaia_dr3, placed at their real gaia_source ra/dec
(epoch_photometry_8_sources_labels.csv).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
import lsdb
import nested_pandas as npd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import Table
from hats.pixel_math.spatial_index import compute_spatial_index

from catalog_fixtures import make_tables, write_inputs
from latentcat.catalog import store
from latentcat.catalog.hats import MAX_SOURCE_ID, healpix29, write_embeddings_hats
from latentcat.layout import HATS_DIR
from latentcat.errors import InputError, LatentcatError
from latentcat.gaia.formats import read_columns
from latentcat.gaia.ingest import ingest
from latentcat.gaia.inputs import find_inputs

DATA = Path(__file__).parent / "data" / "gaia_dr3"
VOT = DATA / "epoch_photometry_datalink_8_sources.vot.xml"
LABELS = DATA / "epoch_photometry_8_sources_labels.csv"
WIDE = {"G": ("g_transit_time", "g_transit_mag", "g_transit_flux", "g_transit_flux_error", "variability_flag_g_reject"),
        "BP": ("bp_obs_time", "bp_mag", "bp_flux", "bp_flux_error", "variability_flag_bp_reject"),
        "RP": ("rp_obs_time", "rp_mag", "rp_flux", "rp_flux_error", "variability_flag_rp_reject")}


# --------------------------------------------------------------------------- input


@pytest.fixture(scope="module")
def long():
    """The DataLink rows (one per source, band and transit) as pandas, as astropy reads them."""
    t = Table.read(VOT, format="votable")
    t["band"] = t["band"].astype(str)
    return t.to_pandas()


@pytest.fixture(scope="module")
def positions():
    """The real gaia_source ra/dec of the 8 sources."""
    return pd.read_csv(LABELS)[["source_id", "ra", "dec"]]


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The staging light curves of the original DataLink file."""
    out = tmp_path_factory.mktemp("vot") / "stage"
    ingest([VOT], out)
    return pq.read_table(out / "light_curves.parquet")


def _per_transit(long: pd.DataFrame) -> pd.DataFrame:
    """The DataLink rows pivoted to the epoch_photometry table's one row per transit."""
    merged = None
    for band, (t, m, fx, fe, var) in WIDE.items():
        part = long[long["band"] == band][["source_id", "transit_id", "time", "mag", "flux", "flux_error",
                                           "rejected_by_variability"]]
        part = part.set_axis(["source_id", "transit_id", t, m, fx, fe, var], axis=1)
        merged = part if merged is None else merged.merge(part, on=["source_id", "transit_id"], how="outer")
    merged["rejected_by_photometry"] = False
    return merged.sort_values(["source_id", "transit_id"]).reset_index(drop=True)


def _write(frame: pd.DataFrame, path: Path, **kwargs) -> Path:
    """An LSDB catalogue of ``frame`` (one row per source, with ra/dec), written by LSDB."""
    cat = lsdb.from_dataframe(frame, ra_column="ra", dec_column="dec", highest_order=2)
    cat.write_catalog(path, progress_bar=False, **kwargs)
    return path


def _nested(rows: pd.DataFrame, positions: pd.DataFrame) -> pd.DataFrame:
    """One row per source with its epochs in a nested column ``lc`` (nested-pandas)."""
    base = npd.NestedFrame(positions.set_index("source_id"))
    return base.join_nested(rows.set_index("source_id"), "lc").reset_index()


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory, long, positions):
    """HATS catalogues of the same light curves in three layouts, each written by LSDB."""
    root = tmp_path_factory.mktemp("hats")
    per_transit = _per_transit(long)
    arrays = per_transit.drop(columns="transit_id").groupby("source_id").agg(list).reset_index()
    return {
        # per-band array columns, as a collection (the catalogue and its margin cache)
        "arrays": _write(positions.merge(arrays), root / "arrays"),
        # nested DataLink rows, leaves as Npix=P/ folders
        "nested_long": _write(_nested(long, positions), root / "nested_long", as_collection=False,
                              npix_suffix="/"),
        # nested epoch_photometry rows (one struct per transit, per-band field names)
        "nested_wide": _write(_nested(per_transit, positions), root / "nested_wide", as_collection=False),
    }


def _ingested(paths: list[Path], out: Path, **kwargs) -> tuple[pa.Table, dict]:
    report = ingest(paths, out, **kwargs)
    return pq.read_table(out / "light_curves.parquet"), report


@pytest.mark.parametrize("form, layout", [("arrays", "epoch_wide"), ("nested_long", "epoch_long"),
                                          ("nested_wide", "epoch_wide")])
def test_hats_light_curves_equal_the_original_file(tmp_path, catalogues, expected, positions, form, layout):
    got, report = _ingested([catalogues[form]], tmp_path / "stage", chunk_rows=300)
    assert got.cast(expected.schema).sort_by("source_id").equals(expected.sort_by("source_id"))
    leaves = [e["file"] for e in report["inputs"]]
    assert len(leaves) > 1 and all("Npix=" in f and f.endswith(".parquet") for f in leaves)
    assert all(e["layout"] == [layout, "sources"] for e in report["inputs"])
    assert sum(e["sources"] for e in report["inputs"]) == 8
    # the ra/dec beside the light curves are the sources table, one row per source
    sources = pq.read_table(tmp_path / "stage" / "sources.parquet").to_pandas()
    assert sources.columns.tolist() == ["source_id", "ra", "dec"]
    pd.testing.assert_frame_equal(sources, positions.sort_values("source_id").reset_index(drop=True))
    assert report["duplicates"]["sources"] == 0
    # the file rows read are the sources, not their epochs
    assert sum(e["rows"] for e in report["inputs"]) == 8


def test_a_collection_reads_its_catalogue_and_lists_its_margin_as_ignored(tmp_path, catalogues):
    collection = catalogues["arrays"]
    assert (collection / "collection.properties").exists()
    files, ignored = find_inputs([collection.parent], tmp_path)
    text = (collection / "collection.properties").read_text().splitlines()
    primary = collection / dict(line.split("=", 1) for line in text if "=" in line)["hats_primary_table_url"]
    roots = {Path(f.bundle) for f in files}  # the catalogue folder of each leaf
    assert roots == {primary, catalogues["nested_long"], catalogues["nested_wide"]} and all(f.hats for f in files)
    margins = [p for p in ignored if p.endswith("_5arcs")]
    assert len(margins) == 1 and Path(margins[0]).parent == collection
    assert not any("_metadata" in p or "properties" in p or "partition_info" in p for p in ignored)
    with pytest.raises(InputError, match="margin catalogue holds no rows"):
        find_inputs([Path(margins[0])], tmp_path)


def test_hats_columns_are_not_offered(tmp_path, catalogues):
    files, _ = find_inputs([catalogues["nested_wide"]], tmp_path)
    columns = read_columns(files[0])
    assert "_healpix_29" in pq.read_schema(files[0].path).names and "_healpix_29" not in columns
    assert "lc" not in columns and {"g_transit_time", "bp_obs_time", "variability_flag_rp_reject"} <= set(columns)


def test_list_of_struct_nesting_reads_like_struct_of_lists(tmp_path, catalogues, expected):
    """The other physical form of a nested column: list<struct<time, mag, ...>> per source."""
    copy = shutil.copytree(catalogues["nested_long"], tmp_path / "cat")
    for leaf in copy.glob("dataset/Norder=*/Dir=*/Npix=*/*.parquet"):
        table = pq.read_table(leaf)
        lc = table.column("lc").combine_chunks()
        fields = lc.flatten()
        values = pa.StructArray.from_arrays([f.values for f in fields], [f.name for f in lc.type])
        nested = pa.ListArray.from_arrays(fields[0].offsets, values)
        pq.write_table(table.set_column(table.schema.get_field_index("lc"), "lc", nested), leaf)
    assert pa.types.is_list(pq.read_schema(next(copy.glob("dataset/**/*.parquet"))).field("lc").type)
    got, _ = _ingested([copy], tmp_path / "stage", chunk_rows=150)
    assert got.cast(expected.schema).sort_by("source_id").equals(expected.sort_by("source_id"))


def test_leaves_with_any_suffix_are_read_and_other_files_listed(tmp_path, catalogues, expected):
    """``Npix=P.parquet.gz`` and ``Npix=P.snappy.parquet`` are leaves too; nothing in dataset/ is skipped unsaid."""
    copy = shutil.copytree(catalogues["nested_wide"], tmp_path / "cat")
    leaves = sorted(copy.glob("dataset/Norder=*/Dir=*/Npix=*.parquet"))
    assert len(leaves) >= 2
    zipped = leaves[0].with_name(leaves[0].name + ".gz")
    zipped.write_bytes(gzip.compress(leaves[0].read_bytes()))
    leaves[0].unlink()
    leaves[1].rename(leaves[1].with_name(leaves[1].stem + ".snappy.parquet"))
    (copy / "dataset" / "notes.txt").write_text("not a leaf")
    (leaves[2].parent / "Npix=x.parquet").write_bytes(b"not a leaf either")
    files, ignored = find_inputs([copy], tmp_path / "work")
    assert {Path(f.name).name for f in files} >= {zipped.name, leaves[1].stem + ".snappy.parquet"}
    assert len(files) == len(leaves)
    assert sorted(ignored) == sorted([str(copy / "dataset" / "notes.txt"), str(leaves[2].parent / "Npix=x.parquet")])
    got, report = _ingested([copy], tmp_path / "stage")
    assert got.cast(expected.schema).sort_by("source_id").equals(expected.sort_by("source_id"))
    assert report["ignored_files"] == ignored


def test_a_bad_epoch_in_a_nested_light_curve_names_the_source_row(tmp_path, catalogues):
    copy = shutil.copytree(catalogues["nested_long"], tmp_path / "cat")
    leaf = sorted(copy.glob("dataset/Norder=*/Dir=*/Npix=*/*.parquet"))[0]
    table = pq.read_table(leaf)
    assert table.num_rows >= 2
    frame = table.to_pandas()
    frame.at[1, "lc"]["band"][2] = "V"  # the second source's third epoch
    pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), leaf)
    with pytest.raises(InputError) as err:
        ingest([copy], tmp_path / "stage")
    sid = table.column("source_id")[1].as_py()
    assert str(err.value) == (f"{leaf}: column 'band', row 2 (source_id {sid}), epoch 3: unknown band 'V' "
                              "(expected G, BP or RP)")


def test_a_broken_leaf_is_named(tmp_path, catalogues):
    copy = shutil.copytree(catalogues["nested_wide"], tmp_path / "cat")
    leaf = sorted(copy.glob("dataset/Norder=*/Dir=*/Npix=*.parquet"))[-1]
    data = leaf.read_bytes()
    leaf.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        ingest([copy], tmp_path / "stage")
    assert str(leaf) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "stage").exists()


# --------------------------------------------------------------------------- output


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    inputs = write_inputs(tmp_path_factory.mktemp("inputs"), n=600, seed=4, shuffle=True)
    cat_dir = tmp_path_factory.mktemp("cat") / "cat"
    info = store.write_catalog(cat_dir, build_info={}, exact_max=100, **inputs)
    return cat_dir, info


def _catalogue_embeddings(cat_dir: Path) -> pa.Table:
    con = duckdb.connect(str(cat_dir / "catalog.duckdb"), read_only=True)
    try:
        return con.sql("SELECT e.*, s.ra, s.dec FROM embeddings e JOIN sources s USING (source_id) "
                       "ORDER BY source_id").to_arrow_table()
    finally:
        con.close()


def test_every_build_writes_embeddings_hats_that_lsdb_reads(built):
    cat_dir, info = built
    path = cat_dir / HATS_DIR
    assert info["embeddings_hats"]["path"] == HATS_DIR and info["embeddings_hats"]["rows"] == 600
    want = _catalogue_embeddings(cat_dir)
    frame = lsdb.read_hats(path).compute()
    got = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False).sort_by("source_id")
    assert got.column("source_id").equals(want.column("source_id"))
    floats = pa.list_(pa.float32())
    for col in ("z", "z_xp", "z_dmdt", "z_fold"):
        assert got.column(col).cast(floats).equals(want.column(col).cast(floats)), col
    assert got.column("z").null_count == want.column("z").null_count > 0
    for col in ("ra", "dec", "has_xp", "recon_loss_fold"):
        assert got.column(col).equals(want.column(col)), col
    # the stored record matches what is on disk
    assert len(lsdb.read_hats(path).get_healpix_pixels()) == info["embeddings_hats"]["leaves"]


def test_duckdb_reads_the_leaves_without_lsdb(built):
    cat_dir, _ = built
    want = _catalogue_embeddings(cat_dir)
    got = duckdb.sql(f"SELECT source_id, z, _healpix_29 FROM read_parquet('{cat_dir / HATS_DIR}/dataset/**/*.parquet') "
                     "ORDER BY source_id").to_arrow_table()
    floats = pa.list_(pa.float32())
    assert got.column("source_id").equals(want.column("source_id"))
    assert got.column("z").cast(floats).equals(want.column("z").cast(floats))
    leaf = next((cat_dir / HATS_DIR).glob("dataset/Norder=*/Dir=*/Npix=*.parquet"))
    assert pq.read_schema(leaf).field("z").type == pa.list_(pa.float32(), 15)  # FLOAT[15] for Arrow readers
    np.testing.assert_array_equal(got.column("_healpix_29").to_numpy(), healpix29(got.column("source_id").to_numpy()))


def test_leaves_hold_at_most_max_rows_and_only_their_pixel(tmp_path, built):
    cat_dir, _ = built
    con = duckdb.connect(str(cat_dir / "catalog.duckdb"), read_only=True)
    try:
        report = write_embeddings_hats(con.table("embeddings"), con.table("sources"), tmp_path / "h", max_rows=40)
    finally:
        con.close()
    leaves = sorted((tmp_path / "h").glob("dataset/Norder=*/Dir=*/Npix=*.parquet"))
    assert report["leaves"] == len(leaves) > 600 // 40 and report["max_leaf_rows"] <= 40
    total = 0
    for leaf in leaves:
        order, pixel = int(leaf.parts[-3].split("=")[1]), int(leaf.stem.split("=")[1])
        index = pq.read_table(leaf, columns=["_healpix_29"]).column(0).to_numpy()
        assert 0 < len(index) <= 40 and np.all(index >> (2 * (29 - order)) == pixel), leaf
        total += len(index)
    assert total == 600
    import hats

    assert hats.read_hats(tmp_path / "h").catalog_info.total_rows == 600


def test_source_id_pixel_is_the_real_position_pixel(positions):
    """Gaia DR3 source_id // 2**35 is the level-12 pixel of the real ra/dec (checked with hats)."""
    from_position = compute_spatial_index(positions["ra"].to_numpy(), positions["dec"].to_numpy())
    from_id = healpix29(positions["source_id"].to_numpy())
    np.testing.assert_array_equal(from_id >> 34, from_position >> 34)
    assert np.all(from_id <= from_position) and np.all(from_position - from_id < 4**17)


def test_lsdb_joins_embeddings_to_a_positional_catalogue_on_source_id(tmp_path, catalogues, positions):
    """The docstring's join: embeddings partitioned by source_id meet a catalogue placed by ra/dec."""
    emb = make_tables(8, seed=0)["embeddings"]
    emb = emb.set_column(0, "source_id", pa.array(np.sort(positions["source_id"].to_numpy())))
    write_embeddings_hats(emb, None, tmp_path / "e")
    gaia = lsdb.read_hats(catalogues["nested_wide"], columns=["source_id", "ra", "dec"])
    joined = lsdb.read_hats(tmp_path / "e").join(
        gaia, left_on="source_id", right_on="source_id", suffixes=("", "_gaia"),
        suffix_method="overlapping_columns").compute()
    assert sorted(joined["source_id"]) == sorted(positions["source_id"])
    assert joined["ra"].isna().all() and joined["ra_gaia"].notna().all()


def test_sources_without_a_position_are_kept_with_null_ra_dec(tmp_path):
    tables = make_tables(100, seed=5)
    sources = tables["sources"].slice(10)  # the first 10 sources have no gaia_source row
    write_embeddings_hats(tables["embeddings"], sources, tmp_path / "h", max_rows=30)
    frame = lsdb.read_hats(tmp_path / "h").compute()
    assert len(frame) == 100 and frame["ra"].isna().sum() == 10
    missing = set(tables["sources"].column("source_id").to_pylist()[:10])
    assert set(frame.loc[frame["ra"].isna(), "source_id"]) == missing


def test_bad_inputs_are_refused(tmp_path, built):
    tables = make_tables(20, seed=6)
    ids = tables["embeddings"].column("source_id").to_numpy().copy()
    ids[3] = MAX_SOURCE_ID  # the first id past the last level-12 pixel
    bad = tables["embeddings"].set_column(0, "source_id", pa.array(ids))
    with pytest.raises(InputError, match="not a Gaia DR3 source_id"):
        write_embeddings_hats(bad, None, tmp_path / "h")
    assert not (tmp_path / "h").exists()
    with pytest.raises(LatentcatError, match="already exists"):
        write_embeddings_hats(tables["embeddings"], None, built[0] / HATS_DIR)
    doubled = pa.concat_tables([tables["sources"], tables["sources"].slice(5, 1), tables["sources"].slice(2, 1)])
    first = min(tables["sources"].column("source_id")[i].as_py() for i in (2, 5))
    with pytest.raises(InputError, match=f"^sources: source_id {first} has more than one row"):
        write_embeddings_hats(tables["embeddings"], doubled, tmp_path / "h")
    pq.write_table(tables["embeddings"].drop_columns(["source_id"]), tmp_path / "no_id.parquet")
    with pytest.raises(InputError, match=f"^{tmp_path / 'no_id.parquet'}: no source_id column"):
        write_embeddings_hats(tmp_path / "no_id.parquet", None, tmp_path / "h")
    assert not (tmp_path / "h").exists()


def test_an_unreadable_input_is_one_line_naming_the_file(tmp_path):
    tables = make_tables(20, seed=7)
    shards = tmp_path / "embeddings"
    shards.mkdir()
    pq.write_table(tables["embeddings"], shards / "embeddings-00000.parquet")
    data = (shards / "embeddings-00000.parquet").read_bytes()
    (shards / "embeddings-00001.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        write_embeddings_hats(shards, None, tmp_path / "h")
    assert str(err.value).startswith(f"{shards}: cannot read the embeddings") and "\n" not in str(err.value)
    assert not (tmp_path / "h").exists() and not list(tmp_path.glob(".h.tmp-*"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=f"^{tmp_path / 'empty'}: no embeddings-\\*.parquet shards"):
        write_embeddings_hats(tmp_path / "empty", None, tmp_path / "h")


def test_a_failure_while_writing_leaves_no_catalogue_folder(tmp_path, monkeypatch):
    from latentcat.catalog import hats as hats_module

    tables = make_tables(200, seed=8)
    real, calls = hats_module._write_leaf, []

    def fail_on_third_leaf(part, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real(part, path)

    monkeypatch.setattr(hats_module, "_write_leaf", fail_on_third_leaf)
    with pytest.raises(OSError, match="disk full"):
        write_embeddings_hats(tables["embeddings"], tables["sources"], tmp_path / "h", max_rows=30)
    assert len(calls) == 3 and calls[0].parts[len(tmp_path.parts)].startswith(".h.tmp-")  # written aside
    assert list(tmp_path.iterdir()) == []  # neither the catalogue folder nor the temporary one is left


def test_properties_record_the_max_rows_threshold(tmp_path):
    import hats

    tables = make_tables(200, seed=9)
    report = write_embeddings_hats(tables["embeddings"], tables["sources"], tmp_path / "h", max_rows=70)
    info = hats.read_hats(tmp_path / "h").catalog_info
    assert info.hats_max_rows == 70 and report["max_leaf_rows"] <= 70 and info.total_rows == 200
    import latentcat

    assert f"latentcat v{latentcat.__version__}" in info.hats_builder
