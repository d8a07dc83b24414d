"""catalog.duckdb in the DuckDB shell (the `duckdb` executable of the duckdb-cli package, a
dependency of latentcat): the catalogue is written in an older storage format
(latentcat.catalog.store.STORAGE_VERSION) so that 1.x clients open it, and its macros answer
there as latentcat's Python API does."""

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from catalog_fixtures import NO_XP_ID, QUERY_ID
from latentcat.catalog import store
from latentcat.query import open as open_catalog


def _shell() -> str:
    """The duckdb executable: beside this Python's own, else on PATH."""
    beside = Path(sys.executable).parent / "duckdb"
    found = str(beside) if beside.is_file() else shutil.which("duckdb")
    if found is None:
        pytest.fail("the `duckdb` shell is not installed (neither beside "
                    f"{sys.executable} nor on PATH): `python3 -m pip install -e .` brings it (duckdb-cli)")
    return found


def _shell_rows(db: Path, sql: str) -> list[list[str]]:
    """Rows (as text) of ``sql`` run by the shell on a read-only ``db``."""
    shell = _shell()
    run = subprocess.run([shell, "-readonly", "-csv", "-noheader", str(db), "-c", sql],
                         capture_output=True, text=True, timeout=300)
    version = subprocess.run([shell, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    assert run.returncode == 0 and not run.stderr.strip(), f"duckdb shell {version}: {run.stderr.strip()}"
    return [line.split(",") for line in run.stdout.splitlines() if line]


def _storage_tag(db: Path) -> str:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT tags['storage_version'] FROM duckdb_databases() WHERE NOT internal").fetchone()[0]
    finally:
        con.close()


@pytest.fixture(scope="module")
def cat_dir(query_catalog):
    return query_catalog


def test_build_info_records_the_storage_version(cat_dir):
    with open_catalog(cat_dir) as cat:
        info = cat.info()["build_info"]
    assert info["catalog_format"]["storage_version"] == store.STORAGE_VERSION
    (key, stored), = _shell_rows(cat_dir / store.DB_NAME, "SELECT key, value->>'$.storage_version' "
                                 "FROM build_info WHERE key = 'catalog_format'")
    assert (key, stored) == ("catalog_format", store.STORAGE_VERSION)


@pytest.mark.parametrize("source_id", [QUERY_ID, NO_XP_ID])
def test_similar_to_in_the_shell_matches_the_python_api(cat_dir, source_id):
    shell_ids = [int(r[0]) for r in _shell_rows(cat_dir / store.DB_NAME,
                                                 f"SELECT source_id FROM similar_to({source_id}, 5)")]
    with open_catalog(cat_dir) as cat:
        api_ids = cat.similar(source_id, k=5, with_meta=False).column("source_id").to_pylist()
    con = duckdb.connect(str(cat_dir / store.DB_NAME), read_only=True)
    try:
        sql_ids = [r[0] for r in con.execute("SELECT source_id FROM similar_to(?, 5)", [source_id]).fetchall()]
    finally:
        con.close()
    assert len(shell_ids) == 5
    assert shell_ids == api_ids == sql_ids


def test_writes_to_a_catalogue_keep_its_storage_version(cat_dir, tmp_path):
    cat = tmp_path / "catalog"
    shutil.copytree(cat_dir, cat)
    before = _storage_tag(cat / store.DB_NAME)
    ids = pa.array([QUERY_ID, NO_XP_ID], pa.int64())
    store.write_predictions(cat, pa.table({"source_id": ids, "class": ["RRAB", "EW"],
                                           "probability": pa.array([0.9, 0.8], pa.float32())}), "test_model")
    store.write_outlier_scores(cat, pa.table({"source_id": ids, "score": pa.array([2.0, 1.0], pa.float32())}), "test")
    store.write_map(cat, pa.table({"source_id": ids, "x": pa.array([0.0, 1.0], pa.float32()),
                                   "y": pa.array([1.0, 0.0], pa.float32()), "blocks": ["xp+dmdt+fold", "dmdt+fold"]}))
    store.update_build_info(cat, {"note": {"written": True}})
    assert _storage_tag(cat / store.DB_NAME) == before
    rows = _shell_rows(cat / store.DB_NAME, "SELECT (SELECT count(*) FROM predictions WHERE model_id = 'test_model'), "
                       "(SELECT count(*) FROM outlier_scores WHERE method = 'test'), (SELECT count(*) FROM map), "
                       "(SELECT value->>'$.written' FROM build_info WHERE key = 'note')")
    assert rows == [["2", "2", "2", "true"]]


@pytest.mark.parametrize("block", ["xp", "fold"])
def test_the_one_block_macros_in_the_shell_match_the_python_api(cat_dir, block):
    shell_ids = [int(r[0]) for r in _shell_rows(cat_dir / store.DB_NAME,
                                                 f"SELECT source_id FROM similar_to_{block}({QUERY_ID}, 5)")]
    with open_catalog(cat_dir) as cat:
        api_ids = cat.similar(QUERY_ID, k=5, modality=block, with_meta=False).column("source_id").to_pylist()
    assert len(shell_ids) == 5 and shell_ids == api_ids
