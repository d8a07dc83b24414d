"""`latentcat similar --ids-file` (many sources, streamed to Parquet or CSV) and `latentcat like`."""

from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from catalog_fixtures import NO_XP_ID, QUERY_ID
from latentcat.cli import app
from latentcat.query import open as open_catalog

runner = CliRunner()


@pytest.fixture(scope="module")
def cat_dir(query_catalog):
    return query_catalog


@pytest.fixture(scope="module")
def ids(cat_dir) -> list[int]:
    with open_catalog(cat_dir) as cat:
        rows = cat.sql("SELECT source_id FROM space WHERE parts <> '' ORDER BY source_id").column("source_id")
    return [QUERY_ID, NO_XP_ID] + rows.to_pylist()[::3]


@pytest.fixture()
def ids_file(tmp_path, ids):
    path = tmp_path / "ids.txt"
    path.write_text("source_id\n# sources to look up\n" + "\n".join(map(str, ids)) + "\n\n")
    return path


def test_similar_ids_file_streams_parquet_equal_to_the_api(cat_dir, ids_file, ids, tmp_path):
    out = tmp_path / "nb.parquet"
    result = runner.invoke(app, ["similar", "--ids-file", str(ids_file), "-k", "4", "--where", "phot_g_mean_mag < 18",
                                 "--catalog", str(cat_dir), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{len(ids)} source_ids" in result.stderr
    table = pq.read_table(out)
    with open_catalog(cat_dir) as cat:
        want = cat.similar(ids, k=4, where="phot_g_mean_mag < 18")
    assert table.equals(want)
    assert table.column_names[:5] == ["query_id", "rank", "source_id", "distance", "blocks"]
    assert sorted(set(table.column("query_id").to_pylist())) == sorted(ids)


def test_similar_ids_file_to_csv_without_metadata(cat_dir, ids_file, ids, tmp_path):
    out = tmp_path / "nb.csv"
    result = runner.invoke(app, ["similar", "--ids-file", str(ids_file), "-k", "3", "--no-meta",
                                 "--catalog", str(cat_dir), "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["query_id", "rank", "source_id", "distance", "blocks"]
    assert len(rows) == 3 * len(ids)
    with open_catalog(cat_dir) as cat:
        want = cat.similar(ids, k=3, with_meta=False)
    assert [int(r["source_id"]) for r in rows] == want.column("source_id").to_pylist()
    # an existing file is kept without --force
    result = runner.invoke(app, ["similar", "--ids-file", str(ids_file), "--catalog", str(cat_dir), "--output", str(out)])
    assert result.exit_code == 2 and "--force" in result.stderr


def test_similar_columns_option_joins_only_those_columns(cat_dir, ids_file, ids, tmp_path):
    out = tmp_path / "nb.csv"
    result = runner.invoke(app, ["similar", "--ids-file", str(ids_file), "-k", "2", "--columns", "best_class_name, period",
                                 "--catalog", str(cat_dir), "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["query_id", "rank", "source_id", "distance", "blocks", "best_class_name", "period"]
    with open_catalog(cat_dir) as cat:
        want = cat.similar(ids, k=2)
    assert [r["best_class_name"] for r in rows] == [c or "" for c in want.column("best_class_name").to_pylist()]
    result = runner.invoke(app, ["similar", str(QUERY_ID), "--columns", "ruwe", "--catalog", str(cat_dir), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)[0]) == ["rank", "source_id", "distance", "blocks", "ruwe"]


@pytest.mark.parametrize("args, message", [
    (["--ids-file", "IDS"], "--ids-file writes its answer to --output FILE"),
    (["--ids-file", "IDS", "--output", "OUT", "--format", "json"], "--ids-file writes parquet or csv, not json"),
    ([str(QUERY_ID), "--ids-file", "IDS"], "give exactly one of SOURCE_ID, --from-file FILE or --ids-file FILE"),
    (["--ids-file", "BAD", "--output", "OUT"], "bad.txt line 3: not a source_id: 'abc'"),
    (["--ids-file", "UNKNOWN", "--output", "OUT"], "source_id 42 is not in the catalogue (and 1 more of the 3 queries)"),
    (["--ids-file", "IDS", "--output", "OUT", "--columns", "ra,mag"], "source_meta has no column 'mag' (it has: "),
    ([str(QUERY_ID), "--columns", "ra", "--no-meta"], "give --columns or --no-meta, not both"),
])
def test_similar_ids_file_errors_are_one_line_and_write_nothing(cat_dir, tmp_path, args, message):
    (tmp_path / "ids.txt").write_text(f"{QUERY_ID}\n")
    (tmp_path / "bad.txt").write_text(f"{QUERY_ID}\n\nabc\n")
    (tmp_path / "unknown.txt").write_text(f"{QUERY_ID}\n42\n43\n")
    names = {"IDS": "ids.txt", "BAD": "bad.txt", "UNKNOWN": "unknown.txt", "OUT": "out.parquet"}
    args = [str(tmp_path / names[a]) if a in names else a for a in args]
    result = runner.invoke(app, ["similar", *args, "--catalog", str(cat_dir)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.parquet").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_like_prints_the_self_check_and_the_ranked_sources(cat_dir, tmp_path):
    with open_catalog(cat_dir) as cat:
        members = cat.sql("SELECT source_id FROM labels JOIN space USING (source_id) WHERE best_class_name = 'RRAB' "
                          "AND parts LIKE '%dmdt+fold%' ORDER BY source_id LIMIT 20").column("source_id").to_pylist()
        want = cat.like(members, top=7)
    path = tmp_path / "set.txt"
    path.write_text("\n".join(map(str, members)) + "\n")
    result = runner.invoke(app, ["like", "--ids", str(path), "--top", "7", "--catalog", str(cat_dir), "-f", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["source_id"] for r in rows] == want.column("source_id").to_pylist()
    assert [r["rank"] for r in rows] == list(range(1, 8))
    assert not set(members) & {r["source_id"] for r in rows}
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("20 of 20 members compared on space:") and "mean distance to the 5 nearest members" in lines[0]
    assert lines[1].startswith("self-check (seed 0): of 4 members held out, ") and "in the top 1%" in lines[1]
    # the terminal table, and a filter
    result = runner.invoke(app, ["like", "--ids", str(path), "--top", "5", "--where", "phot_g_mean_mag < 16",
                                 "--catalog", str(cat_dir)])
    assert result.exit_code == 0, result.output
    assert "nearest_member" in result.stdout
    result = runner.invoke(app, ["like", "--ids", str(path), "--catalog", str(cat_dir), "--where", "nope >"])
    assert result.exit_code == 2 and "bad where filter" in result.stderr
