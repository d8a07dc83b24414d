"""Careless and hostile use of a served catalogue: nothing written, nothing read outside it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import latentcat
from catalog_fixtures import QUERY_ID
from latentcat.cli import app
from latentcat.errors import InputError, LatentcatError

runner = CliRunner()


@pytest.fixture(scope="module")
def cat_dir(query_catalog):
    return query_catalog


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(result) -> str:
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("command", [
    ["sql", "SELECT 1 AS one", "-f", "csv"],
    ["similar", str(QUERY_ID), "-k", "3", "-f", "csv"],
])
def test_output_never_overwrites_the_catalogue_or_an_existing_file(cat_dir, tmp_path, command):
    before = _digests(cat_dir)
    for target in (cat_dir / "catalog.duckdb", cat_dir / "index" / "xp.faiss", cat_dir / "new.csv"):
        line = _one_line_error(runner.invoke(app, [*command, "--catalog", str(cat_dir), "--output", str(target)]))
        assert "inside the catalogue folder" in line
    assert _digests(cat_dir) == before
    existing = tmp_path / "answer.csv"
    existing.write_text("keep me\n")
    line = _one_line_error(runner.invoke(app, [*command, "--catalog", str(cat_dir), "--output", str(existing)]))
    assert "exists; give --force" in line and existing.read_text() == "keep me\n"
    ok = runner.invoke(app, [*command, "--catalog", str(cat_dir), "--output", str(existing), "--force"])
    assert ok.exit_code == 0, ok.output
    assert existing.read_text() != "keep me\n" and not list(tmp_path.glob(".answer.csv.tmp*"))


@pytest.mark.parametrize("where", [
    "1=1); COPY sources TO '{out}'; SELECT (1",
    "1=1; COPY sources TO '{out}'",
    "source_id IN (SELECT 1 FROM read_text('{secret}'))",
    "source_id IN (SELECT 1 FROM read_csv('{secret}'))",
])
def test_a_where_filter_is_one_expression_that_reaches_no_file(cat_dir, tmp_path, where):
    secret = tmp_path / "secret.txt"
    secret.write_text("the password is swordfish\n")
    out = tmp_path / "stolen.csv"
    text = where.format(out=out, secret=secret)
    before = _digests(cat_dir)
    line = _one_line_error(runner.invoke(app, ["similar", str(QUERY_ID), "--where", text, "--catalog", str(cat_dir)]))
    assert "bad where filter" in line and "swordfish" not in line
    with latentcat.open(cat_dir) as cat, pytest.raises(LatentcatError, match="bad where filter"):
        cat.similar(QUERY_ID, where=text)
    assert not out.exists() and _digests(cat_dir) == before


def test_user_sql_reaches_no_file_unless_asked(cat_dir, tmp_path):
    out = tmp_path / "copy.csv"
    with latentcat.open(cat_dir) as cat:
        for query in (f"COPY (SELECT source_id FROM sources) TO '{out}'", f"SELECT * FROM read_text('{cat_dir}/catalog.duckdb')",
                      "SET enable_external_access = true", f"ATTACH '{tmp_path / 'other.duckdb'}' AS other"):
            with pytest.raises(LatentcatError):
                cat.sql(query)
    assert not out.exists() and not (tmp_path / "other.duckdb").exists()
    # the CLI gives DuckDB's full reach only when asked, in a process of its own
    result = runner.invoke(app, ["sql", f"SELECT * FROM read_csv('{tmp_path / 'missing.csv'}')", "--catalog", str(cat_dir)])
    assert "disabled" in _one_line_error(result).lower()


def test_a_temporary_view_cannot_stand_in_for_the_catalogue(cat_dir):
    with latentcat.open(cat_dir) as cat:
        before = cat.similar(QUERY_ID, k=5).column("source_id").to_pylist()
        cat.sql("CREATE TEMP VIEW source_meta AS SELECT 1 AS source_id")
        cat.sql("CREATE TEMP VIEW space AS SELECT 1 AS source_id")
        assert cat.similar(QUERY_ID, k=5).column("source_id").to_pylist() == before
        assert cat.similar(QUERY_ID, k=5, where="phot_g_mean_mag < 30").column("source_id").to_pylist() == before


@pytest.mark.parametrize("k", ["0", "-3", "1000000000", "10001"])
def test_k_is_bounded(cat_dir, k):
    line = _one_line_error(runner.invoke(app, ["similar", str(QUERY_ID), "-k", k, "--catalog", str(cat_dir)]))
    assert "k must be between 1 and 10000" in line


def test_sql_reads_files_with_allow_files_only(cat_dir, tmp_path):
    import subprocess
    import sys

    data = tmp_path / "mine.csv"
    data.write_text("source_id\n" + f"{QUERY_ID}\n")
    query = f"SELECT count(*) AS n FROM read_csv('{data}') JOIN sources USING (source_id)"

    def run(*extra):  # a process of its own, as a user's shell runs it
        return subprocess.run([sys.executable, "-c", "from latentcat.cli import app; app()", "sql", query,
                               "--catalog", str(cat_dir), "-f", "csv", *extra], capture_output=True, text=True, timeout=120)

    refused = run()
    assert refused.returncode != 0 and "disabled" in refused.stderr.lower() and "Traceback" not in refused.stderr
    allowed = run("--allow-files")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.split() == ['"n"', "1"]


def test_ingest_of_a_simulated_survey_folder_skips_its_truth(tmp_path):
    sim = tmp_path / "sim"
    assert runner.invoke(app, ["simulate", "--n", "120", "--seed", "4", "--out", str(sim)]).exit_code == 0
    result = runner.invoke(app, ["ingest", str(sim), "--out", str(tmp_path / "stage")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "stage" / "ingest_report.json").read_text())
    assert report["ignored_files"] == [str(sim / "truth.parquet")]
    labels = pq.read_table(tmp_path / "stage" / "labels.parquet")
    archive = pacsv.read_csv(sim / "archive" / "vari_classifier_result.csv")
    assert labels.num_rows == archive.num_rows > 0  # the classifier's labels alone, not the truth's classes
    # named on its own, the truth table is refused with the reason
    line = _one_line_error(runner.invoke(app, ["ingest", str(sim / "truth.parquet"), "--out", str(tmp_path / "s2")]))
    assert "truth table of a simulated survey" in line


def _long_csv(path: Path, rows: list[tuple]) -> Path:
    """A DataLink-layout epoch photometry CSV (source_id, band, time, mag, flux, flux_error, flags)."""
    head = "source_id,transit_id,band,time,mag,flux,flux_error,rejected_by_photometry,rejected_by_variability\n"
    path.write_text(head + "".join(",".join(str(v) for v in r) + "\n" for r in rows))
    return path


def test_non_physical_and_conflicting_epochs_are_dropped_or_counted(tmp_path):
    good = [(7, 100 + i, "G", 1700.0 + 30 * i, 15.0 + 0.01 * i, 1e4, 10.0, "false", "false") for i in range(12)]
    bad = [(7, 200, "G", 2100.0, 15.1, 1e4, -10.0, "false", "false"),    # negative flux error
           (7, 201, "G", 2130.0, 15.1, -1e4, 10.0, "false", "false")]   # negative flux
    first = _long_csv(tmp_path / "a.csv", good + bad)
    # the same source again, one epoch with another magnitude at the same time
    second = _long_csv(tmp_path / "b.csv", [good[0], (7, 101, "G", 1730.0, 16.5, 1e4, 10.0, "false", "false")])
    result = runner.invoke(app, ["ingest", str(first), str(second), "--out", str(tmp_path / "stage")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "stage" / "ingest_report.json").read_text())
    dropped = {e["file"]: e["dropped"] for e in report["inputs"]}
    assert dropped[str(first)]["non_positive_error"] == 2
    assert report["duplicates"]["light_curve_epochs"] == 2 and report["duplicates"]["conflicting_epochs"] == 1
    lc = pq.read_table(tmp_path / "stage" / "light_curves.parquet").to_pylist()[0]
    assert len(lc["g_time"]) == 12 and min(lc["g_mag_err"]) > 0  # the non-physical points are gone
    assert lc["g_mag"][1] == pytest.approx(15.01)  # a conflict keeps the first input's value (the documented rule)


def test_features_check_the_staging_folder_and_their_own_shards_on_resume(tmp_path):
    import shutil

    from latentcat.features.extract import extract_features
    from latentcat.gaia.ingest import ingest
    from latentcat.gaia.simulate import simulate_survey

    simulate_survey(n=150, seed=6, out=tmp_path / "sim")
    ingest([tmp_path / "sim" / "archive"], tmp_path / "stage")
    first = extract_features(tmp_path / "stage", tmp_path / "features", shard_size=50)
    assert first["n_shards"] == 3 and first["shards_redone"] == 0
    shards = sorted((tmp_path / "features").glob("features-*.parquet"))
    want = [pq.read_table(p) for p in shards]
    # a truncated shard and a shard replaced by another's file are computed again on resume
    shards[0].write_bytes(shards[0].read_bytes()[:500])
    shutil.copy(shards[2], shards[1])
    again = extract_features(tmp_path / "stage", tmp_path / "features", shard_size=50)
    assert again["shards_redone"] == 2 and again["shards_written"] == 2 and again["shards_skipped"] == 1
    assert all(pq.read_table(p).equals(t) for p, t in zip(shards, want))
    # a staging folder that lost the table its ingest report lists is refused, naming it
    (tmp_path / "stage" / "light_curves.parquet").unlink()
    with pytest.raises(InputError, match=r"light_curves.parquet: missing, but ingest_report.json says ingest wrote it"):
        extract_features(tmp_path / "stage", tmp_path / "f2", shard_size=50)


def test_damaged_catalogue_files_give_one_line(cat_dir, tmp_path):
    import shutil

    for damaged in ("catalog.duckdb", "index/space_xp_dmdt_fold_colour.faiss"):
        copy = tmp_path / damaged.replace("/", "_")
        shutil.copytree(cat_dir, copy)
        data = (copy / damaged).read_bytes()
        (copy / damaged).write_bytes(data[: len(data) // 3])
        failed = 0
        for command in (["info"], ["similar", str(QUERY_ID)], ["outliers"]):
            result = runner.invoke(app, [*command, "--catalog", str(copy)])
            if result.exit_code == 0:  # DuckDB may not touch the damaged part for this command
                continue
            failed += 1
            assert damaged.split("/")[-1] in _one_line_error(result)
        assert failed >= 1


def test_leftovers_of_killed_additions_are_removed_by_the_next(tmp_path):
    import os
    import subprocess
    import sys

    from latentcat.catalog.add import clean_leftovers

    cat = tmp_path / "cat"
    cat.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".cat.add-{int(gone.stdout)}-abc"
    alive = tmp_path / f".cat.add-{os.getpid()}-def"
    other = tmp_path / f".other.add-{int(gone.stdout)}-ghi"
    for folder in (dead, alive, other):
        (folder / "new").mkdir(parents=True)
    assert clean_leftovers(cat) == [dead.name]
    assert not dead.exists() and alive.exists() and other.exists()
