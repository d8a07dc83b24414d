"""The query commands (info, sql, similar) on a catalogue: formats, defaults and one-line errors."""

import csv
import io
import json
import re

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from catalog_fixtures import NO_XP_ID, QUERY_ID
from latentcat.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def cat_dir(query_catalog):
    return query_catalog


def test_similar_json_matches_the_sql_macro(cat_dir):
    result = runner.invoke(app, ["similar", str(QUERY_ID), "-k", "5", "--catalog", str(cat_dir), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    macro = runner.invoke(app, ["sql", f"SELECT source_id FROM similar_to({QUERY_ID}, 5) ORDER BY distance",
                                "--catalog", str(cat_dir), "--format", "csv"])
    assert macro.exit_code == 0, macro.output
    macro_ids = [int(r["source_id"]) for r in csv.DictReader(io.StringIO(macro.output))]
    assert [r["source_id"] for r in rows] == macro_ids


def test_similar_without_xp_says_which_blocks_were_used(cat_dir):
    result = runner.invoke(app, ["similar", str(NO_XP_ID), "-k", "3", "--catalog", str(cat_dir), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert {r["blocks"] for r in json.loads(result.output)} == {"space:dmdt+fold+colour"}
    result = runner.invoke(app, ["similar", str(NO_XP_ID), "-k", "3", "--catalog", str(cat_dir), "-f", "json",
                                 "--modality", "all"])
    assert {r["blocks"] for r in json.loads(result.output)} == {"dmdt+fold"}


def test_where_filter_and_parquet_output(cat_dir, tmp_path):
    out = tmp_path / "nb.parquet"
    result = runner.invoke(app, ["similar", str(QUERY_ID), "-k", "7", "--where", "phot_g_mean_mag < 16",
                                 "--catalog", str(cat_dir), "--format", "parquet", "--output", str(out)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.num_rows == 7
    assert max(table.column("phot_g_mean_mag").to_pylist()) < 16


def test_catalog_from_environment_and_info(cat_dir, monkeypatch):
    monkeypatch.setenv("LATENTCAT_CATALOG", str(cat_dir))
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"]["embeddings"] == 400


@pytest.mark.parametrize(
    "args, message",
    [
        (["similar", "12345", "--catalog", "{cat}"], r"error: source_id 12345 is not in the catalogue"),
        # DuckDB's own words follow the kind of error and name the bad token or statement
        (["sql", "SELEC nonsense", "--catalog", "{cat}"],
         r'error: SQL error: Parser Error: syntax error at or near "SELEC"( .*)?'),
        (["sql", "DELETE FROM sources", "--catalog", "{cat}"],
         r"error: SQL refused: DELETE statements are not allowed on a read-only catalogue .*"),
        (["info", "--catalog", "{missing}"], r"error: {missing}: not a latentcat catalogue \(catalog\.duckdb not found\)"),
    ],
)
def test_bad_requests_give_one_line_and_nonzero_exit(cat_dir, tmp_path, args, message):
    missing = tmp_path / "nowhere"
    args = [a.format(cat=cat_dir, missing=missing) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert re.fullmatch(message.replace("{missing}", re.escape(str(missing))), lines[0]), lines[0]
    assert "Traceback" not in result.output


def test_catalogue_is_not_changed_by_a_rejected_write(cat_dir):
    before = (cat_dir / "catalog.duckdb").read_bytes()
    runner.invoke(app, ["sql", "DELETE FROM sources", "--catalog", str(cat_dir)])
    assert (cat_dir / "catalog.duckdb").read_bytes() == before


def test_output_into_a_missing_folder_is_one_line(cat_dir, tmp_path):
    result = runner.invoke(app, ["sql", "SELECT 1", "--catalog", str(cat_dir), "--output", str(tmp_path / "no" / "x.csv")])
    assert result.exit_code == 2
    assert result.output.startswith("error: --output") and "does not exist" in result.output
