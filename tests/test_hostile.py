"""Careless and hostile use of a served catalogue: nothing written, nothing read outside it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
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


# ----------------------------------------------------------------------------------------------
# The cases of a hostile and careless user's afternoon: each one line on stderr, a non-zero
# exit code where it failed, no traceback, the catalogue byte-identical.


def _cli(*args: str, stdout=None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, as a user's shell runs it."""
    return subprocess.run([sys.executable, "-c", "from latentcat.cli import app; app()", *args],
                          stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def _one_stderr_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


REATTACH = "USE memory; DETACH catalog; ATTACH '{db}' AS w; DROP TABLE w.labels CASCADE"


@pytest.mark.parametrize("allow_files", [False, True])
def test_no_sql_can_detach_reattach_or_write_the_catalogue(tiny_build, tmp_path, allow_files):
    cat_dir = Path(shutil.copytree(tiny_build.catalogue, tmp_path / "cat"))
    before = _digests(cat_dir)
    db = cat_dir / "catalog.duckdb"
    attacks = [REATTACH.format(db=db), "DETACH catalog", f"ATTACH '{db}' AS w (READ_WRITE)",
               "SELECT 1; DETACH catalog", "USE memory", "PREPARE p AS SELECT 1", "CHECKPOINT",
               "BEGIN TRANSACTION", "SET memory_limit = '100GB'", "DROP TABLE labels", "INSERT INTO labels VALUES (1, 'X', 1.0)"]
    with latentcat.open(cat_dir, allow_external_access=allow_files) as cat:
        sid = cat.sql("SELECT source_id FROM embeddings WHERE z_fold IS NOT NULL ORDER BY 1 LIMIT 1")[0][0].as_py()
        for attack in attacks:
            with pytest.raises(LatentcatError, match=r"SQL refused|read-only"):
                cat.sql(attack)
        assert cat.similar(sid, k=5).num_rows == 5  # the catalogue still answers
        # what a reader may do: read, and make temporary objects of its own
        cat.sql("CREATE TEMP VIEW bright AS SELECT source_id FROM sources WHERE phot_g_mean_mag < 14")
        assert cat.sql("SELECT count(*) FROM bright")[0][0].as_py() >= 0
        assert cat.sql("DESCRIBE labels").num_rows > 0 and cat.sql("SHOW TABLES").num_rows > 0
    line = _one_stderr_line(_cli("sql", REATTACH.format(db=db), "--catalog", str(cat_dir),
                                 *(["--allow-files"] if allow_files else [])))
    assert "SQL refused: SET statements are not allowed" in line
    assert _digests(cat_dir) == before


def _read_while(cat_dir: Path, running, seen: list, errors: list) -> None:
    """A reader: open the catalogue again and again while ``running()``, recording the row
    counts of the snapshot it got (sources, embeddings, the joint index) and any error."""
    import time

    while running():
        try:
            with latentcat.open(cat_dir) as cat:
                counts = cat.sql("SELECT (SELECT count(*) FROM sources) AS s, (SELECT count(*) FROM embeddings) AS e")
                sid = cat.sql("SELECT min(source_id) FROM embeddings WHERE z_fold IS NOT NULL")[0][0].as_py()
                found = cat.similar(sid, k=3).num_rows
            seen.append((counts["s"][0].as_py(), counts["e"][0].as_py(), found))
        except Exception as err:  # noqa: BLE001 - recorded, and the test fails on it
            errors.append(repr(err))
        time.sleep(0.05)


def test_two_concurrent_adds_both_land_while_readers_read(tiny_build, tmp_path):
    import threading

    from latentcat.gaia.simulate import simulate_survey

    cat_dir = Path(shutil.copytree(tiny_build.catalogue, tmp_path / "cat"))
    for seed in (7, 8):
        simulate_survey(n=40, seed=seed, out=tmp_path / f"new{seed}")
    with latentcat.open(cat_dir) as cat:
        before = cat.sql("SELECT count(*) FROM sources")[0][0].as_py()
    adds = [subprocess.Popen([sys.executable, "-c", "from latentcat.cli import app; app()", "add", str(cat_dir),
                              str(tmp_path / f"new{seed}" / "archive")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (7, 8)]
    seen, errors = [], []
    readers = [threading.Thread(target=_read_while, args=(cat_dir, lambda: any(p.poll() is None for p in adds),
                                                           seen, errors)) for _ in range(3)]
    for reader in readers:
        reader.start()
    outs = [p.communicate(timeout=600) for p in adds]
    for reader in readers:
        reader.join(timeout=120)
    assert not errors, errors[:3]
    assert seen and {(s, e) for s, e, _ in seen} <= {(before + n, before + n) for n in (0, 40, 80)}  # whole snapshots
    assert all(found == 3 for _, _, found in seen)
    assert [p.returncode for p in adds] == [0, 0], [err for _, err in outs]
    added = [json.loads(out)["added"] for out, _ in outs]
    assert added == [40, 40]
    assert any("waiting:" in err and "latentcat add" in err for _, err in outs)  # the second said whom it waited for
    with latentcat.open(cat_dir) as cat:
        assert cat.sql("SELECT count(*) FROM sources")[0][0].as_py() == before + 80
        assert cat.sql("SELECT count(*) FROM embeddings")[0][0].as_py() == before + 80
        assert len(cat.info()["build_info"]["additions"]) == 2


def test_a_curve_of_too_many_epochs_is_refused_before_any_work(query_file_catalog, tmp_path):
    cat_dir = query_file_catalog
    rng = np.random.default_rng(3)
    for n in (10_000, 500_000):
        path = tmp_path / f"epochs{n}.csv"
        t = np.sort(rng.uniform(1700, 2700, n))
        path.write_text("time,mag,mag_err\n" + "".join(f"{x:.6f},{15 + 0.1 * np.sin(x):.5f},0.01\n" for x in t))
        proc = _cli("similar", "--from-file", str(path), "--catalog", str(cat_dir))
        assert f"{path}: more than 2000 rows; at most 2000 epochs are accepted" in _one_stderr_line(proc)


@pytest.fixture(scope="module")
def query_file_catalog(tiny_build, tmp_path_factory) -> Path:
    """A copy of the tiny build (it has models, which a query by example needs)."""
    return Path(shutil.copytree(tiny_build.catalogue, tmp_path_factory.mktemp("byexample") / "cat"))


SLOW = "(SELECT count(*) FROM range(200000) a, range(200000) b WHERE a.range + b.range = 7) > 0"


def test_a_slow_filter_or_query_is_stopped_at_the_time_limit(query_catalog):
    import time

    with latentcat.open(query_catalog, timeout=1.0) as cat:
        t0 = time.perf_counter()
        with pytest.raises(LatentcatError, match=r"where filter .* stopped after 1 s, the catalogue's time limit"):
            cat.similar(QUERY_ID, k=3, where=SLOW)
        with pytest.raises(LatentcatError, match=r"the query stopped after 1 s"):
            cat.sql(f"SELECT {SLOW} AS slow")
        assert time.perf_counter() - t0 < 30  # the cross join alone runs for minutes
        assert cat.similar(QUERY_ID, k=3, where="phot_g_mean_mag < 30").num_rows == 3  # the Catalog still answers
    line = _one_stderr_line(_cli("similar", str(QUERY_ID), "--where", SLOW, "--timeout", "1",
                                 "--catalog", str(query_catalog)))
    assert "stopped after 1 s" in line


def test_a_query_is_bounded_in_memory(query_catalog):
    with latentcat.open(query_catalog, memory_limit_mib=64) as cat:
        with pytest.raises(LatentcatError, match=r"larger than the catalogue's memory limit \(64 MiB\)"):
            cat.sql("SELECT * FROM range(100000000)")
        with pytest.raises(LatentcatError, match="Out of Memory"):
            cat.sql("SELECT length(list(range)) AS n FROM range(100000000)")
        assert cat.sql("SELECT count(*) FROM sources")[0][0].as_py() > 0


@pytest.mark.parametrize("kind", ["fifo", "socket", "symlink"])
def test_output_never_replaces_what_is_not_a_regular_file(query_catalog, tmp_path, kind):
    """A FIFO (or a device node: the same refusal; a test must never touch a real one), a
    socket or a symbolic link named by --output stays what it is, even with --force."""
    import os
    import socket

    if kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
    elif kind == "socket":
        target = tmp_path / "sock"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(target))
    else:
        (tmp_path / "real.csv").write_text("keep\n")
        target = tmp_path / "link.csv"
        target.symlink_to(tmp_path / "real.csv")
    mode = os.lstat(target).st_mode
    proc = _cli("sql", "SELECT 1 AS one", "-f", "csv", "--output", str(target), "--force", "--catalog", str(query_catalog))
    assert "not a regular file; not replaced" in _one_stderr_line(proc)
    assert os.lstat(target).st_mode == mode
    assert not list(tmp_path.glob(".*.tmp-*"))


@pytest.mark.parametrize("given", ["/dev/zero", "loop"])
def test_add_reads_only_regular_files_and_folders(tiny_build, tmp_path, given):
    cat_dir = Path(shutil.copytree(tiny_build.catalogue, tmp_path / "cat"))
    before = _digests(cat_dir)
    if given == "loop":
        (tmp_path / "a").symlink_to(tmp_path / "b")
        (tmp_path / "b").symlink_to(tmp_path / "a")
        given = str(tmp_path / "a")
    line = _one_stderr_line(_cli("add", str(cat_dir), given, timeout=60))
    assert given in line and ("character device" in line or "symbolic links" in line)
    assert _digests(cat_dir) == before


def test_add_of_a_file_whose_every_epoch_is_dropped_adds_nothing_and_says_why(tiny_build, tmp_path):
    cat_dir = Path(shutil.copytree(tiny_build.catalogue, tmp_path / "cat"))
    before = _digests(cat_dir)
    rows = [(s, 1000 + i, "G", 1700.0 + 30 * i, 15.0 + 0.01 * i, 1e4, -10.0, "false", "false")
            for s in (11, 12, 13) for i in range(20)]
    line = _one_stderr_line(_cli("add", str(cat_dir), str(_long_csv(tmp_path / "negative.csv", rows))))
    assert "none of its 3 sources has a G epoch or an XP spectrum left" in line and "60 non_positive_error" in line
    assert _digests(cat_dir) == before


@pytest.mark.parametrize("args", [
    ["similar", str(2**63)],
    ["similar", "--ids-file", "{big}", "--output", "{out}"],
    ["like", "--ids", "{big}"],
    ["similar", "--ids-file", "{binary}", "--output", "{out}"],
])
def test_source_ids_out_of_range_or_binary_files_are_one_line(query_catalog, tmp_path, args):
    (tmp_path / "big.txt").write_text(f"{QUERY_ID}\n{2**63}\n")
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # a picture given by mistake
    args = [a.format(big=tmp_path / "big.txt", binary=tmp_path / "binary.txt", out=tmp_path / "out.parquet") for a in args]
    line = _one_stderr_line(_cli(*args, "--catalog", str(query_catalog)))
    assert "is not a source_id (a whole number from 0 to 2**63 - 1)" in line or "line 1: not text" in line
    assert not (tmp_path / "out.parquet").exists()


def test_values_are_printed_as_text_never_as_markup(query_catalog):
    proc = _cli("sql", "SELECT '[/x]' AS s, '[bold red]x[/]' AS \"[/y]\"", "--catalog", str(query_catalog))
    assert proc.returncode == 0, proc.stderr
    assert "[/x]" in proc.stdout and "[bold red]x[/]" in proc.stdout and "[/y]" in proc.stdout


@pytest.mark.parametrize("scale", [("time", 1e300), ("mag", 1e200)])
def test_values_outside_physical_bounds_are_one_line_naming_file_and_point(query_file_catalog, tmp_path, scale):
    column, factor = scale
    t = np.linspace(1700.0, 2700.0, 60)
    m = 15 + 0.3 * np.sin(2 * np.pi * t / 0.364)
    values = {"time": t, "mag": m}
    values[column] = values[column] * factor
    path = tmp_path / "scaled.csv"
    path.write_text("time,mag,mag_err\n" + "".join(f"{a!r},{b!r},0.01\n" for a, b in zip(values["time"].tolist(),
                                                                                      values["mag"].tolist())))
    line = _one_stderr_line(_cli("similar", "--from-file", str(path), "--catalog", str(query_file_catalog)))
    assert f"{path}: point 1 has {column} " in line and "give finite values" in line
    assert "source_id -1" not in line and "/tmp/latentcat-query" not in line


def test_repeated_times_keep_the_first_epoch_and_are_counted(query_file_catalog):
    from latentcat.query.by_example import similar_to_data

    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(1700, 2700, 120))
    m = 15 + 0.25 * np.sin(2 * np.pi * t / 0.364) + rng.normal(0, 0.01, t.size)
    twice_t, twice_m = np.repeat(t, 2), np.repeat(m, 2)
    twice_m[1::2] += 1.0  # every time again, one magnitude fainter
    with latentcat.open(query_file_catalog) as cat:
        clean, info = similar_to_data(cat, (t, m, np.full(t.size, 0.01)), k=5)
        doubled, twice = similar_to_data(cat, (twice_t, twice_m, np.full(twice_t.size, 0.01)), k=5)
    assert twice["duplicate_epochs"] == 120 and twice["conflicting_epochs"] == 120
    assert info["duplicate_epochs"] == 0
    assert twice["period"] == pytest.approx(info["period"]) and twice["amplitude"] == pytest.approx(info["amplitude"])
    assert doubled.column("source_id").to_pylist() == clean.column("source_id").to_pylist()


def test_explorer_empty_views_and_late_pages_answer(tiny_build, tmp_path):
    from starlette.testclient import TestClient

    from latentcat.catalog import store
    from latentcat.serve import Explorer, create_app

    cat_dir = Path(shutil.copytree(tiny_build.catalogue, tmp_path / "cat"))
    n = 2_105  # more than 100 pages of 20 rows in one class
    store.write_predictions(cat_dir, pa.table({"source_id": pa.array(np.arange(1, n + 1), pa.int64()),
                                               "class": ["RR"] * n, "probability": pa.array(np.full(n, 0.5), pa.float32())}),
                            "many")
    explorer = Explorer(cat_dir)
    try:
        client = TestClient(create_app(explorer), base_url="http://127.0.0.1")
        page = client.get("/classes?model=many&class=RR&page=101")
        assert page.status_code == 200 and "sources 2,001 to 2,020" in page.text
        last = client.get("/classes?model=many&class=RR&page=106")
        assert last.status_code == 200 and "sources 2,101 to 2,105" in last.text and ">next<" not in last.text
        past = client.get("/classes?model=many&class=RR&page=107")
        assert past.status_code == 404 and "page must be between 1 and 106" in past.text
        full = explorer.map.full
        width = full.x1 - full.x0
        empty = client.get(f"/map.png?view={full.x1 + 2 * width},{full.x1 + 3 * width},{full.y0},{full.y1}")
        assert empty.status_code == 200 and empty.headers["content-type"] == "image/png"
    finally:
        explorer.close()


def test_explorer_filter_is_stopped_at_its_time_limit(tiny_build):
    import time
    import urllib.parse

    from starlette.testclient import TestClient

    from latentcat.serve import Explorer, create_app

    explorer = Explorer(tiny_build.catalogue, timeout=1.0)
    try:
        client = TestClient(create_app(explorer), base_url="http://127.0.0.1")
        with latentcat.open(tiny_build.catalogue) as cat:
            sid = cat.sql("SELECT source_id FROM embeddings WHERE z_fold IS NOT NULL ORDER BY 1 LIMIT 1")[0][0].as_py()
        t0 = time.perf_counter()
        page = client.get("/?" + urllib.parse.urlencode({"source_id": sid, "where": SLOW}))
        assert time.perf_counter() - t0 < 30
        assert "stopped after 1 s" in page.text and "Traceback" not in page.text
        assert client.get(f"/?source_id={sid}").status_code == 200
    finally:
        explorer.close()


def test_a_full_stdout_and_sigterm_give_one_line_and_leave_nothing(query_catalog, tmp_path):
    import signal
    import time

    with open("/dev/full", "w") as full:
        proc = _cli("sql", "SELECT * FROM sources", "-f", "csv", "--catalog", str(query_catalog), stdout=full)
    assert "cannot write the output: No space left on device" in _one_stderr_line(proc)

    ids = tmp_path / "ids.txt"
    with latentcat.open(query_catalog) as cat:
        all_ids = cat.sql("SELECT source_id FROM embeddings WHERE z_fold IS NOT NULL")["source_id"].to_pylist()
    ids.write_text("\n".join(str(i) for i in all_ids * 200) + "\n")
    out = tmp_path / "neighbours.csv"
    running = subprocess.Popen([sys.executable, "-c", "from latentcat.cli import app; app()", "similar", "--ids-file",
                                str(ids), "--output", str(out), "-k", "50", "--catalog", str(query_catalog)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".neighbours.csv.tmp-*")) and running.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert running.poll() is None, "the query ended before it could be stopped: give it more work"
    running.send_signal(signal.SIGTERM)
    _, err = running.communicate(timeout=60)
    assert running.returncode != 0 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".neighbours.csv.tmp-*"))


def test_ingest_keeps_the_first_row_of_an_epoch_repeated_in_one_input(tmp_path):
    rows = [(7, 100 + i, "G", 1700.0 + 30 * i, 15.0 + 0.01 * i, 1e4, 10.0, "false", "false") for i in range(12)]
    # the fourth epoch again, later in the file, three magnitudes fainter
    path = _long_csv(tmp_path / "twice.csv", rows[:6] + [(7, 999, "G", 1790.0, 18.0, 1e4, 10.0, "false", "false")] + rows[6:])
    result = runner.invoke(app, ["ingest", str(path), "--out", str(tmp_path / "stage")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "stage" / "ingest_report.json").read_text())
    assert report["duplicates"]["conflicting_epochs"] == 1
    lc = pq.read_table(tmp_path / "stage" / "light_curves.parquet").to_pylist()[0]
    assert len(lc["g_time"]) == 12 and lc["g_mag"][3] == pytest.approx(15.03)


def test_a_stopped_command_stops_its_worker_processes_at_once():
    """Ctrl-C or SIGTERM (SystemExit) while a pool works: its processes are stopped, not waited for."""
    import time

    from latentcat.compute import shard_runner

    with shard_runner("processes", None, 2) as run:
        results = run(time.sleep, [(0,), (120,)])
        next(results)  # the short job ended; the long one runs
        t0 = time.perf_counter()
        results.close()  # what an exception in the consumer does to the generator
        assert time.perf_counter() - t0 < 30
