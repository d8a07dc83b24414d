"""A large simulated survey is simulated and written in chunks: memory follows the chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from latentcat.gaia.ingest import ingest
from latentcat.gaia.simulate import simulate_survey


def test_chunked_survey_is_one_survey(tmp_path):
    summary = simulate_survey(250, 4, tmp_path / "sim", chunk=100)
    archive = sorted(p.name for p in (tmp_path / "sim" / "archive").iterdir())
    assert [n for n in archive if n.startswith("EpochPhotometry_sim")] == [
        "EpochPhotometry_sim-000.parquet", "EpochPhotometry_sim-001.parquet", "EpochPhotometry_sim-002.parquet"]
    assert len([n for n in archive if n.startswith("gaia_source")]) == 3

    truth = pq.read_table(tmp_path / "sim" / "truth.parquet")
    ids = truth.column("source_id").to_numpy()
    assert truth.num_rows == summary["n_sources"] == 250
    assert np.all(np.diff(ids) > 0)  # unique and ascending across the chunks
    assert sum(summary["classes"].values()) == 250
    assert summary["n_epochs"] == int(truth.column("n_g_transits").to_numpy().sum())
    # chunks differ (own seeds), and the same call gives the same files
    per_file = [pq.read_table(tmp_path / "sim" / "archive" / f"EpochPhotometry_sim-00{c}.parquet") for c in range(3)]
    assert [t.num_rows for t in per_file] == [83, 84, 83]
    assert not per_file[0].column("g_transit_mag").equals(per_file[2].column("g_transit_mag"))
    simulate_survey(250, 4, tmp_path / "again", chunk=100)
    for name in archive:
        assert (tmp_path / "sim" / "archive" / name).read_bytes() == (tmp_path / "again" / "archive" / name).read_bytes()

    # the chunk files ingest as one survey: every simulated source has its light curve
    ingest([tmp_path / "sim" / "archive"], tmp_path / "stage")
    staged = pq.read_table(tmp_path / "stage" / "light_curves.parquet", columns=["source_id"])
    assert np.array_equal(np.sort(staged.column("source_id").to_numpy()), ids)


def test_a_rerun_into_the_same_folder_leaves_only_its_own_files(tmp_path):
    out = tmp_path / "sim"
    first = simulate_survey(250, 4, out, chunk=100)
    assert len(first["files"]["epoch_photometry"]) == 3
    again = simulate_survey(40, 4, out, epoch_format="ecsv.gz")
    archive = sorted(p.name for p in (out / "archive").iterdir())
    assert archive == ["EpochPhotometry_sim.csv.gz", "XpContinuousMeanSpectrum_sim.parquet", "gaia_source.csv",
                       "vari_classifier_result.csv"]
    assert sorted(p.name for p in out.iterdir()) == ["archive", "truth.parquet"]  # no temporary left
    assert {k: [Path(p).name for p in v] for k, v in again["files"].items()} == {
        "epoch_photometry": ["EpochPhotometry_sim.csv.gz"], "xp_continuous": ["XpContinuousMeanSpectrum_sim.parquet"],
        "gaia_source": ["gaia_source.csv"], "vari_classifier_result": ["vari_classifier_result.csv"],
        "truth": ["truth.parquet"]}
    assert all(Path(p).exists() for paths in again["files"].values() for p in paths)
    report = ingest([out / "archive"], tmp_path / "stage")
    assert report["tables"]["light_curves"]["rows"] == pq.read_table(out / "truth.parquet").num_rows == 40
