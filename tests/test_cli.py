"""The command line: help, version, and one-line errors with non-zero exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from astropy.table import Table
from typer.testing import CliRunner

from latentcat import __version__
from latentcat.cli import app

DATA = Path(__file__).parent / "data" / "gaia_dr3"
runner = CliRunner()


def test_help_lists_every_command_with_a_description():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("simulate", "ingest", "fetch", "features", "train", "embed", "demo"):
        assert command in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"latentcat {__version__}"


def test_ingest_real_datalink_file(tmp_path):
    vot = DATA / "epoch_photometry_datalink_8_sources.vot.xml"
    stage = tmp_path / "stage"
    result = runner.invoke(app, ["ingest", str(vot), "--out", str(stage)])
    assert result.exit_code == 0, result.output
    # the report printed is the one written beside the tables
    assert json.loads(result.output) == json.loads((stage / "ingest_report.json").read_text())

    # every source of the file, each band's epochs as astropy reads them (less those the
    # variability processing rejected), in time order
    ref = Table.read(vot, format="votable")
    band, source = np.asarray(ref["band"]).astype(str), np.asarray(ref["source_id"])
    kept = ~np.asarray(ref["rejected_by_variability"])
    lc = pq.read_table(stage / "light_curves.parquet")
    assert sorted(lc.column("source_id").to_pylist()) == sorted(set(source.tolist())) and lc.num_rows == 8
    for row in lc.to_pylist():
        for b in ("G", "BP", "RP"):
            mine = kept & (source == row["source_id"]) & (band == b)
            order = np.argsort(np.asarray(ref["time"])[mine], kind="stable")
            p = b.lower()
            assert row[f"n_{p}"] == len(row[f"{p}_time"]) == int(mine.sum()), (row["source_id"], b)
            np.testing.assert_array_equal(row[f"{p}_time"], np.asarray(ref["time"])[mine][order])
            np.testing.assert_allclose(row[f"{p}_mag"], np.asarray(ref["mag"])[mine][order], rtol=1e-6)
    assert lc.column("n_g").to_numpy().min() > 0


def test_truncated_file_gives_one_line_naming_it_and_nonzero_exit(tmp_path):
    bad = tmp_path / "truncated.vot.xml"
    bad.write_bytes((DATA / "epoch_photometry_datalink_8_sources.vot.xml").read_bytes()[:20_000])
    stage = tmp_path / "stage"
    # a real subprocess: what a user's shell sees
    proc = subprocess.run(
        [sys.executable, "-m", "latentcat.cli", "ingest", str(bad), "--out", str(stage)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "truncated.vot.xml" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not stage.exists()


def test_an_output_path_that_is_a_file_gives_one_line_naming_it(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a user's file")
    vot = DATA / "epoch_photometry_datalink_8_sources.vot.xml"
    result = runner.invoke(app, ["ingest", str(vot), "--out", str(taken)])
    assert result.exit_code == 2 and result.output.startswith(f"error: {taken}: ") and result.output.count("\n") == 1
    assert taken.read_text() == "a user's file"


def test_fetch_needs_exactly_one_of_ids_or_adql(tmp_path):
    result = runner.invoke(app, ["fetch", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "exactly one of --ids" in result.output


def test_train_uses_the_device_of_its_config_unless_told(tmp_path):
    import torch

    config = tmp_path / "build.toml"
    config.write_text('[models]\ndevice = "cuda"\n')
    args = ["train", str(tmp_path), "--out", str(tmp_path / "models"), "--config", str(config)]
    from_config = runner.invoke(app, args)
    told_cpu = runner.invoke(app, args + ["--device", "cpu"])
    assert from_config.exit_code != 0 and told_cpu.exit_code != 0  # tmp_path holds no feature shards
    assert "no features-*.parquet shards" in told_cpu.output
    if not torch.cuda.is_available():  # the config's device is checked before the shards are looked for
        assert "device cuda requested but torch sees no CUDA device" in from_config.output
