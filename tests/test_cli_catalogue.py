"""The catalogue commands on a real (tiny) build: classify, outliers, map, plot, report, similar --from-file."""

import csv
import json
import re
import shutil

import pyarrow.parquet as pq
import pytest
from matplotlib import image as mpimg
from typer.testing import CliRunner

import latentcat
from latentcat.cli import app
from latentcat.gaia.ingest import ingest

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cat_dir(tiny_build, tmp_path_factory):
    """A private copy of the tiny build: these commands write predictions and scores into it."""
    copy = tmp_path_factory.mktemp("cli_cat") / "catalog"
    shutil.copytree(tiny_build.catalogue, copy)
    return copy


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_classify_prints_scores_and_stores_predictions_for_every_source(cat_dir, tmp_path):
    figure = tmp_path / "confusion.png"
    result = run("classify", "--model", "rf", "--min-per-class", "5", "--figure", figure, "--catalog", cat_dir, "-f", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[: result.output.rindex("]") + 1])
    assert {"class", "precision", "recall", "f1", "support"} <= set(report[0])
    model_id = re.search(r"model (rf-[0-9a-f]+)", result.output).group(1)
    assert figure.read_bytes()[:8] == PNG
    with latentcat.open(cat_dir) as cat:
        n = cat.sql("SELECT count(DISTINCT source_id) AS n FROM predictions WHERE model_id = ?", [model_id]).to_pylist()[0]["n"]
        assert n == cat.sql("SELECT count(*) AS n FROM embeddings").to_pylist()[0]["n"]


def test_outliers_show_the_top_ranked_sources_with_metadata(cat_dir):
    result = run("outliers", "--top", "3", "--catalog", cat_dir, "-f", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]
    assert "phot_g_mean_mag" in rows[0] and "period" in rows[0]


def test_map_png_and_bad_requests(cat_dir, tmp_path):
    out = tmp_path / "map.png"
    with latentcat.open(cat_dir) as cat:
        on_map = cat.map().column("source_id")[0].as_py()
    result = run("map", "--out", out, "--color-by", "period", "--highlight", on_map, "--catalog", cat_dir)
    assert result.exit_code == 0, result.output
    assert mpimg.imread(out).shape[:2] == (900, 1200)
    bad = run("map", "--out", out, "--color-by", "colour", "--catalog", cat_dir)
    assert bad.exit_code == 2 and bad.output.startswith("error: --color-by 'colour'")
    unknown = run("map", "--out", out, "--highlight", 42, "--catalog", cat_dir)
    assert unknown.exit_code == 2 and "source_id 42 is not on the map" in unknown.output


def test_plot_source_and_neighbours(cat_dir, tmp_path):
    out = tmp_path / "similar.png"
    with latentcat.open(cat_dir) as cat:
        sid = cat.sql("SELECT source_id FROM embeddings WHERE has_fold ORDER BY source_id LIMIT 1").to_pylist()[0]["source_id"]
    result = run("plot", sid, "-k", "3", "--out", out, "--catalog", cat_dir)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG
    assert run("plot", 7, "--out", out, "--catalog", cat_dir).exit_code == 2


def test_report_is_one_self_contained_html_file(cat_dir, tmp_path):
    out = tmp_path / "report.html"
    result = run("report", "--out", out, "--catalog", cat_dir)
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert html.count("data:image/png;base64,") >= 2
    assert not re.search(r"(src|href)=\"https?://", html)


def test_similar_from_a_csv_light_curve_finds_the_source_itself(cat_dir, tiny_build, tmp_path):
    stage = tmp_path / "stage"
    ingest([tiny_build.archive], stage)
    with latentcat.open(cat_dir) as cat:
        sid = cat.sql("SELECT source_id FROM embeddings WHERE has_fold AND NOT has_xp ORDER BY source_id LIMIT 1").to_pylist()[0]["source_id"]
    row = [r for r in pq.read_table(stage / "light_curves.parquet").to_pylist() if r["source_id"] == sid][0]
    obs = tmp_path / "obs.csv"
    with open(obs, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["time", "mag", "mag_err"])
        writer.writerows(zip([t + 55197.0 for t in row["g_time"]], row["g_mag"], row["g_mag_err"]))  # MJD
    result = run("similar", "--from-file", obs, "--time-format", "mjd", "-k", "3", "--catalog", cat_dir, "-f", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("["):])
    assert rows[0]["source_id"] == sid and rows[0]["distance"] < 1e-4
