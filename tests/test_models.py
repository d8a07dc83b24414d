"""The three VAEs, the trainer and the encoder, on synthetic feature shards of the documented schema.

The generator below makes Gaia-like G light curves (sinusoidal pulsators, sawtooth RR Lyrae-like
pulsators and detached eclipsing binaries) sampled at ~20-80 irregular epochs over DR3's time
span, and smooth XP-like spectra whose slope follows the class; it then computes the features
(folded curve, dm-dt map, normalised XP vector) the way docs/schemas.md defines them.
"""

from __future__ import annotations

import dataclasses

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from latentcat.errors import InputError
from latentcat.features.extract import FEATURES_SCHEMA
from latentcat.models.config import ModelConfig, TrainConfig
from latentcat.models.data import ShardCache, iter_batches, load_modality, make_batch, validation_mask
from latentcat.models.embed import embed
from latentcat.models.fold_vae import FoldVAE
from latentcat.models.trainer import train

DT_EDGES = 1.0 / np.array([4e-4, 1e-3, 1 / 500, 1 / 200, 1e-2, 1 / 50, 1 / 20, 0.5, 3, 8, 25])[::-1]
DM_EDGES = np.concatenate([np.linspace(0, 3, 20), [np.inf]])

FLOAT_LIST = pa.list_(pa.float32())
FEATURE_SCHEMA = FEATURES_SCHEMA  # the shards these tests write have the feature stage's own schema


def _shape(kind: int, phase: np.ndarray) -> np.ndarray:
    """Magnitude change (brighter = negative) over one period for each class."""
    if kind == 0:  # sinusoidal pulsator
        return -np.sin(2 * np.pi * phase)
    if kind == 1:  # RR Lyrae-like sawtooth: fast rise, slow decline
        return np.where(phase < 0.15, 1 - phase / 0.15 * 2, -1 + (phase - 0.15) / 0.85 * 2)
    # detached eclipsing binary: two eclipses of unequal depth
    d = np.minimum(np.abs(phase - 0.0), np.abs(phase - 1.0))
    return 2.0 * np.exp(-0.5 * (d / 0.03) ** 2) + 1.2 * np.exp(-0.5 * ((phase - 0.5) / 0.03) ** 2)


def _dmdt(t: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(t), 1)
    z = (m - m.mean()) / m.std()
    counts, _, _ = np.histogram2d(t[j] - t[i], np.abs(z[j] - z[i]), bins=[DT_EDGES, DM_EDGES])
    total = counts.sum(axis=1, keepdims=True)
    p = counts / np.maximum(total, 1)
    err = np.sqrt(counts + 1) / np.maximum(total, 1)
    return p.reshape(-1), err.reshape(-1)


def make_features(
    path: Path, n: int, seed: int, first_id: int = 4_000_000_000_000_000, no_xp_every: int = 7, no_lc_every: int = 11
) -> np.ndarray:
    """Write one realistic features shard of ``n`` sources; returns the class of each source.

    Every ``no_xp_every``-th source has no XP spectrum and every ``no_lc_every``-th too few
    epochs, so their features are null with a reason, as the feature stage writes them.
    """
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, n)
    rows = {name: [] for name in FEATURE_SCHEMA.names}
    grid = np.linspace(0, 60, 55)
    for k in range(n):
        n_obs = int(rng.integers(20, 80))
        t = np.sort(rng.uniform(1666, 2710, n_obs))
        period = [rng.uniform(2, 30), rng.uniform(0.3, 0.8), rng.uniform(0.5, 5)][kind[k]]
        amp = rng.uniform(0.1, 0.6)
        err = rng.uniform(0.005, 0.02, n_obs)
        mag = 15 + amp * _shape(kind[k], (t / period) % 1.0) + rng.normal(0, err)
        phase = (t / (2 * period)) % 1.0
        order = np.argsort(phase)
        lo, hi = mag.min(), mag.max()
        has_lc = k % no_lc_every != 3
        has_xp = k % no_xp_every != 2
        rows["source_id"].append(first_id + 1_000_003 * k)
        rows["n_obs"].append(n_obs)
        rows["n_clipped"].append(0)
        for name, value in (
            ("g_mean", mag.mean()),
            ("g_median", np.median(mag)),
            ("g_std", mag.std()),
            ("g_amplitude", np.percentile(mag, 95) - np.percentile(mag, 5)),
            ("g_skew", float(((mag - mag.mean()) ** 3).mean() / mag.std() ** 3)),
            ("time_span", t[-1] - t[0]),
            ("period", period),
            ("period_fap", 1e-6),
            ("period_power", 0.6),
            ("period_coherence", 0.9),
        ):
            rows[name].append(float(value))
        if has_lc:
            p, e = _dmdt(t, mag)
            rows["dmdt"].append(p.astype(np.float32))
            rows["dmdt_err"].append(e.astype(np.float32))
            rows["fold_phase"].append(phase[order].astype(np.float32))
            rows["fold_mag"].append(((mag[order] - lo) / (hi - lo)).astype(np.float32))
            rows["fold_err"].append((err[order] / (hi - lo)).astype(np.float32))
            rows["lc_reason"].append(None)
            rows["period_reliable"].append(True)
            # d(BP - RP)/dG: long-period and RR Lyrae-like pulsators redden as they fade, binaries hardly
            rows["colour_slope"].append([0.45, 0.55, 0.08][kind[k]])
            rows["colour_slope_err"].append(0.03)
        else:
            for name in ("dmdt", "dmdt_err", "fold_phase", "fold_mag", "fold_err", "colour_slope", "colour_slope_err"):
                rows[name].append(None)
            rows["lc_reason"].append("too few G epochs")
            rows["period_reliable"].append(None)
        if has_xp:
            temp = [6500, 7000, 5000][kind[k]] * rng.uniform(0.9, 1.1)
            # smooth pseudo-continuum: hotter stars are brighter in BP relative to RP
            bp = np.exp(-0.5 * ((grid - 30) / 14) ** 2) * (temp / 6000) ** 2
            rp = np.exp(-0.5 * ((grid - 25) / 16) ** 2) * 1.5 * (6000 / temp)
            flux = np.concatenate([bp, rp]) * 1e4
            sigma = 0.01 * flux + 5.0
            flux = flux + rng.normal(0, sigma)
            scale = np.percentile(flux, 99.5)
            rows["xp_flux"].append((flux / scale).astype(np.float32))
            rows["xp_flux_error"].append((sigma / scale).astype(np.float32))
            rows["xp_scale"].append(float(scale))
            rows["xp_reason"].append(None)
        else:
            rows["xp_flux"].append(None)
            rows["xp_flux_error"].append(None)
            rows["xp_scale"].append(None)
            rows["xp_reason"].append("no XP spectrum")
    pq.write_table(pa.table(rows, schema=FEATURE_SCHEMA), path)
    return kind


def fast_config(max_epochs: int = 15, fold_epochs: int = 3, dmdt_epochs: int = 40) -> TrainConfig:
    """Paper defaults, but a small fold network and few epochs so the tests stay fast (the
    dm-dt VAE, whose first coordinate is the given mean magnitude, needs more than 15 to
    separate the classes on a few hundred maps)."""
    return TrainConfig.from_dict(
        {
            "seed": 3,
            "progress": False,
            "val_fraction": 0.2,
            "xp": {"max_epochs": max_epochs},
            "dmdt": {"max_epochs": dmdt_epochs},
            "fold": {"max_epochs": fold_epochs, "width": 32, "harmonics": 6},
        }
    )


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    feat = tmp_path_factory.mktemp("features")
    make_features(feat / "features-00000.parquet", 240, seed=1)
    make_features(feat / "features-00001.parquet", 160, seed=2, first_id=5_000_000_000_000_000)
    return feat


@pytest.fixture(scope="module")
def trained(features, tmp_path_factory) -> tuple[Path, dict]:
    models = tmp_path_factory.mktemp("models")
    return models, train(features, models, fast_config(), device="cpu")


def _losses(path: Path) -> list[dict]:
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def test_training_lowers_validation_loss_and_writes_model_folders(trained):
    models, summary = trained
    for m in ("xp", "dmdt", "fold"):
        folder = models / m
        for name in ("model.pt", "config.json", "losses.csv", "losses.png", "versions.json"):
            assert (folder / name).is_file(), f"{m}/{name}"
        rows = _losses(folder / "losses.csv")
        untrained = rows[0]["val_loss"]
        best = min(r["val_loss"] for r in rows[1:])
        # the untrained model must be clearly worse on held-out sources than the trained one
        assert best < untrained - 0.05 * abs(untrained), (m, untrained, best)
        record = json.loads((folder / "config.json").read_text())
        assert record["seed"] == 3 and record["modality"] == m
        assert set(json.loads((folder / "versions.json").read_text())) >= {"torch", "numpy", "latentcat"}
        assert summary["models"][m]["n_val"] > 0 and summary["models"][m]["n_train"] > summary["models"][m]["n_val"]


def test_same_features_and_seed_give_identical_weights(features, tmp_path):
    """Whether the models are trained one after the other or each in a process of its own
    (``workers``), the same features and seed give the same weights, bit for bit."""
    for run, workers in (("a", 1), ("b", 2)):
        config = fast_config(max_epochs=2, fold_epochs=1, dmdt_epochs=2)
        config.workers = workers
        report = train(features, tmp_path / run, config, device="cpu")
        assert list(report["models"]) == ["xp", "dmdt", "fold"]
    for m in ("xp", "dmdt", "fold"):
        a = torch.load(tmp_path / "a" / m / "model.pt", weights_only=True)
        b = torch.load(tmp_path / "b" / m / "model.pt", weights_only=True)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (m, key)


def test_reloaded_models_reproduce_embeddings_bit_for_bit(features, trained, tmp_path):
    models, _ = trained
    embed(features, models, tmp_path / "a", device="cpu", batch_size=64)
    embed(features, models, tmp_path / "b", device="cpu", batch_size=64)
    for name in ("embeddings-00000.parquet", "embeddings-00001.parquet"):
        assert pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "b" / name))


def test_missing_modality_gives_null_block_and_nothing_imputed(features, trained, tmp_path):
    models, _ = trained
    summary = embed(features, models, tmp_path, device="cpu")
    emb = pq.read_table(tmp_path / "embeddings-00000.parquet").to_pydict()
    feat = pq.read_table(features / "features-00000.parquet").to_pydict()
    assert emb["source_id"] == feat["source_id"]
    for m, col in (("xp", "xp_flux"), ("dmdt", "dmdt"), ("fold", "fold_mag")):
        has_feature = np.array([v is not None for v in feat[col]])
        assert 0 < has_feature.sum() < len(has_feature)
        assert np.array_equal(np.array(emb[f"has_{m}"]), has_feature)
        for z, logvar, recon, ok in zip(emb[f"z_{m}"], emb[f"z_logvar_{m}"], emb[f"recon_loss_{m}"], has_feature):
            if ok:
                assert len(z) == 5 and len(logvar) == 5 and np.isfinite(z).all() and np.isfinite(recon)
            else:
                assert z is None and logvar is None and recon is None
    assert summary["n_sources"] == 400 and summary["n_shards"] == 2


def test_without_a_model_its_block_is_null(features, trained, tmp_path):
    models, _ = trained
    only_xp = tmp_path / "models"
    (only_xp / "xp").mkdir(parents=True)
    for f in (models / "xp").iterdir():
        (only_xp / "xp" / f.name).write_bytes(f.read_bytes())
    embed(features, only_xp, tmp_path / "emb", device="cpu")
    emb = pq.read_table(tmp_path / "emb" / "embeddings-00001.parquet")
    assert emb.column("z_fold").null_count == emb.num_rows
    assert not any(emb.column("has_dmdt").to_pylist())
    assert emb.column("z_xp").null_count < emb.num_rows


def test_latents_separate_the_simulated_classes(tmp_path, features, trained):
    """The XP and dm-dt latents of unseen sources tell the three simulated classes apart as
    well as the raw features they encode.

    The baseline is a 1-nearest-neighbour classifier on the raw input of the same sources
    (110 XP fluxes, 200 dm-dt bins). The classes' XP temperatures overlap, so the raw fluxes
    are near the best any classifier can do and the 5 XP latents must keep nearly all of it
    (within 0.1); the raw dm-dt maps are blurred by the shot noise of 20-80 epochs, and the
    dm-dt latents must do at least as well as them (a dm-dt VAE trained for only a few epochs
    scores about chance). (The fold VAE needs far more than the few epochs a unit test can afford.)
    """
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    models, _ = trained
    kind = make_features(tmp_path / "features-00000.parquet", 150, seed=99, first_id=6_000_000_000_000_000)
    embed(tmp_path, models, tmp_path / "emb", device="cpu")
    emb = pq.read_table(tmp_path / "emb" / "embeddings-00000.parquet").to_pydict()
    feat = pq.read_table(tmp_path / "features-00000.parquet").to_pydict()
    for m, column, inferred, margin in (
        ("xp", "xp_flux", slice(None), 0.1),
        ("dmdt", "dmdt", slice(1, None), 0.0),  # dm-dt's first coordinate: the given mean magnitude
    ):
        has = np.array(emb[f"has_{m}"])
        z = np.array([v for v in emb[f"z_{m}"] if v is not None])[:, inferred]
        raw = np.array([v for v in feat[column] if v is not None])
        assert len(raw) == len(z) == has.sum()
        acc = cross_val_score(KNeighborsClassifier(5), z, kind[has], cv=5).mean()
        baseline = cross_val_score(KNeighborsClassifier(1), raw, kind[has], cv=5).mean()
        assert baseline > 0.5, (m, baseline)  # chance is 1/3: the raw input does carry the class
        assert acc >= baseline - margin, (m, acc, baseline)


def test_fold_latents_separate_sawtooth_from_eclipsing(features, tmp_path):
    """After a short training run, fold latents tell RR Lyrae-like sawtooths from eclipsing binaries.

    The two shapes differ at every phase (one broad asymmetric cycle against two narrow
    dips on a flat curve), so a 5-nearest-neighbour classifier on the 5 fold latents of
    unseen sources must beat the 50% of guessing clearly; an encoder whose latents
    collapse onto the prior (all sources alike) scores about 50%.
    """
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    config = TrainConfig.from_dict(
        {"seed": 3, "progress": False, "val_fraction": 0.2, "fold": {"max_epochs": 12, "width": 32, "harmonics": 6}}
    )
    train(features, tmp_path / "models", config, modalities=("fold",), device="cpu")
    kind = make_features(tmp_path / "features-00000.parquet", 200, seed=99, first_id=6_000_000_000_000_000)
    embed(tmp_path, tmp_path / "models", tmp_path / "emb", device="cpu")
    emb = pq.read_table(tmp_path / "emb" / "embeddings-00000.parquet").to_pydict()
    has = np.array(emb["has_fold"])
    z = np.array([v for v in emb["z_fold"] if v is not None])
    keep = kind[has] > 0  # 1: sawtooth, 2: eclipsing
    assert keep.sum() > 100
    acc = cross_val_score(KNeighborsClassifier(5), z[keep], kind[has][keep], cv=5).mean()
    assert acc > 0.65, acc


def test_fold_embeddings_do_not_depend_on_batching(features, trained):
    """Folds are batched by length for speed; each source's latents must not depend on it."""
    from latentcat.models.embed import encode_arrays
    from latentcat.models.trainer import load_model

    models, _ = trained
    model, _ = load_model(models / "fold")
    arrays = load_modality(features / "features-00000.parquet", "fold")
    mu_a, logvar_a, recon_a = encode_arrays(model, arrays, batch_size=7)
    mu_b, logvar_b, recon_b = encode_arrays(model, arrays, batch_size=4096)
    order = np.random.default_rng(0).permutation(arrays.n)
    mu_c, _, _ = encode_arrays(model, arrays.select(np.isin(np.arange(arrays.n), order[: arrays.n // 2])), batch_size=16)
    assert np.allclose(mu_a, mu_b, atol=1e-5) and np.allclose(logvar_a, logvar_b, atol=1e-5)
    assert np.allclose(recon_a, recon_b, rtol=1e-4, atol=1e-5)
    assert np.allclose(mu_c, mu_a[np.sort(order[: arrays.n // 2])], atol=1e-5)


def test_xp_input_standardiser_pools_training_batches_and_is_fixed_when_encoding(features):
    """The encoder's input statistics equal those of every training row seen; encoding leaves them alone."""
    from latentcat.models.xp_vae import InputStandardiser

    x = load_modality(features / "features-00000.parquet", "xp").values["x"]
    scaler = InputStandardiser(x.shape[1], floor=1e-2)
    assert torch.equal(scaler.eval()(torch.from_numpy(x[:5])), torch.from_numpy(x[:5]))  # identity before training
    scaler.train()
    for lo, hi in ((0, 7), (7, 70), (70, 71), (71, len(x))):  # uneven batches, one of a single row
        scaler(torch.from_numpy(x[lo:hi]))
    assert np.allclose(scaler.mean.numpy(), x.astype(np.float64).mean(axis=0), atol=1e-5)
    assert np.allclose(scaler.var.numpy(), x.astype(np.float64).var(axis=0), rtol=1e-3, atol=1e-7)
    scaler.eval()
    whole = scaler(torch.from_numpy(x)).numpy()
    alone = scaler(torch.from_numpy(x[3:4])).numpy()
    assert np.allclose(alone, whole[3:4]) and int(scaler.count) == len(x)
    spread = np.maximum(x.std(axis=0), 1e-2)
    assert np.allclose(whole, (x - x.mean(axis=0)) / spread, atol=1e-3)


def _fold_batch(lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    width = max(lengths)
    phase = np.sort(rng.uniform(0, 1, (len(lengths), width)), axis=1).astype(np.float32)
    mag = rng.uniform(0, 1, phase.shape).astype(np.float32)
    mask = np.arange(width)[None, :] < np.array(lengths)[:, None]
    return {
        "phase": torch.from_numpy(phase),
        "mag": torch.from_numpy(mag),
        "err": torch.full(phase.shape, 0.02),
        "mask": torch.from_numpy(mask),
        "length": torch.tensor(lengths, dtype=torch.int64),
        # log10 fold period (d) and amplitude (mag): the code's first two coordinates
        "context": torch.from_numpy(np.column_stack([rng.uniform(-1, 3, len(lengths)),
                                                     rng.uniform(-2, 0, len(lengths))]).astype(np.float32)),
    }


def _take(batch: dict[str, torch.Tensor], row: int, width: int) -> dict[str, torch.Tensor]:
    return {k: (v[row : row + 1, :width] if v.ndim == 2 else v[row : row + 1]) for k, v in batch.items()}


@pytest.mark.parametrize("encoder", ["conv", "gru"])
def test_fold_encoder_ignores_padding(encoder):
    torch.manual_seed(0)
    model = FoldVAE(dataclasses.replace(TrainConfig().fold, encoder=encoder)).eval()
    batch = _fold_batch([17, 60, 33])
    with torch.no_grad():
        mu_batch, logvar_batch = model.encode(batch)
        for row, n in enumerate([17, 60, 33]):
            alone = _take(batch, row, n)
            mu, logvar = model.encode(alone)
            assert torch.allclose(mu[0], mu_batch[row], atol=1e-5), row
            assert torch.allclose(logvar[0], logvar_batch[row], atol=1e-5), row
        # garbage in the padded cells must not matter either
        noisy = {k: v.clone() for k, v in batch.items()}
        pad = ~noisy["mask"]
        noisy["mag"][pad] = 1e3
        noisy["phase"][pad] = 0.5
        mu_noisy, _ = model.encode(noisy)
        assert torch.equal(mu_noisy, mu_batch)
        # and the likelihood counts only real points
        nll, n_points = model.nll(noisy, mu_batch)
        nll_ref, _ = model.nll(batch, mu_batch)
        assert torch.equal(nll, nll_ref) and n_points.tolist() == [17, 60, 33]


def test_fold_batches_are_sorted_by_phase_and_padded(features):
    arrays = load_modality(features / "features-00000.parquet", "fold")
    batch = make_batch(arrays, np.arange(10))
    lengths = np.diff(arrays.values["offsets"])[:10]
    assert batch["mask"].sum(dim=1).tolist() == lengths.tolist()
    assert batch["phase"].shape[1] == lengths.max()
    for row, n in enumerate(lengths):
        assert torch.all(torch.diff(batch["phase"][row, :n]) >= 0)


def test_cached_epochs_give_the_same_batches_without_reading_the_shards_again(features, tmp_path):
    shards = []
    for src in sorted(features.glob("features-*.parquet")):
        shards.append(tmp_path / src.name)
        shards[-1].write_bytes(src.read_bytes())

    def epoch(modality, cache, seed):
        return [(sid, {k: v.clone() for k, v in b.items()}) for sid, b in iter_batches(
            shards, modality, 32, split="train", val_fraction=0.2, rng=np.random.default_rng(seed), cache=cache)]

    for modality in ("fold", "dmdt"):
        cache = ShardCache()
        streamed = [epoch(modality, None, seed) for seed in (0, 1)]
        assert len(epoch(modality, cache, 0)) == len(streamed[0])  # the first pass fills the cache
        assert cache.bytes > 0
        for shard in shards:  # the later epochs must not need the files
            shard.rename(shard.with_suffix(".moved"))
        cached = epoch(modality, cache, 1)
        for shard in shards:
            shard.with_suffix(".moved").rename(shard)
        assert len(cached) == len(streamed[1])
        for (sid_a, a), (sid_b, b) in zip(cached, streamed[1]):
            assert np.array_equal(sid_a, sid_b)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    small = ShardCache(max_bytes=1)  # nothing fits: every pass reads the shards
    epoch("dmdt", small, 0)
    assert small.bytes == 0


def test_validation_split_depends_on_source_id_only():
    ids = np.arange(1_000_000, 1_020_000, dtype=np.int64) * 7919
    val = validation_mask(ids, 0.1)
    assert 0.09 < val.mean() < 0.11
    perm = np.random.default_rng(0).permutation(len(ids))
    assert np.array_equal(validation_mask(ids[perm], 0.1), val[perm])


def test_bad_features_raise_one_line_input_error(tmp_path, features):
    table = pq.read_table(features / "features-00000.parquet")
    flux = table.column("xp_flux").to_pylist()
    row = next(i for i, v in enumerate(flux) if v is not None)
    flux[row] = [float("nan")] + flux[row][1:]
    bad = table.set_column(table.schema.get_field_index("xp_flux"), "xp_flux", pa.array(flux, FLOAT_LIST))
    pq.write_table(bad, tmp_path / "features-00000.parquet")
    sid = table.column("source_id")[row].as_py()
    with pytest.raises(InputError, match=f"xp_flux, source_id {sid}") as exc:
        load_modality(tmp_path / "features-00000.parquet", "xp")
    assert "\n" not in str(exc.value)

    short = table.set_column(
        table.schema.get_field_index("dmdt"), "dmdt", pa.array([None if v is None else v[:199] for v in table.column("dmdt").to_pylist()], FLOAT_LIST)
    )
    pq.write_table(short, tmp_path / "features-00000.parquet")
    with pytest.raises(InputError, match="expected 200 values"):
        load_modality(tmp_path / "features-00000.parquet", "dmdt")


def test_fold_model_written_before_the_encoder_key_loads_as_the_gru(features, tmp_path):
    """A model folder whose config.json has no ``encoder`` (the GRU was the only encoder then)
    is rebuilt as the GRU and reproduces its codes; a new folder records its encoder."""
    import json

    from latentcat.models.embed import encode_arrays
    from latentcat.models.trainer import load_model

    config = TrainConfig.from_dict({"seed": 1, "progress": False,
                                    "fold": {"max_epochs": 1, "width": 16, "encoder": "gru"}})
    train(features, tmp_path / "models", config, modalities=("fold",), device="cpu")
    folder = tmp_path / "models" / "fold"
    arrays = load_modality(features / "features-00000.parquet", "fold")
    model, record = load_model(folder)
    assert record["model"]["encoder"] == "gru" and hasattr(model, "gru")
    before = encode_arrays(model, arrays)[0]
    del record["model"]["encoder"], record["model"]["conv_layers"]  # as an older latentcat wrote it
    (folder / "config.json").write_text(json.dumps(record))
    old, _ = load_model(folder)
    assert hasattr(old, "gru") and np.array_equal(encode_arrays(old, arrays)[0], before)
    assert TrainConfig().fold.encoder == "gru"
    with pytest.raises(InputError, match="fold.encoder must be conv or gru"):
        TrainConfig.from_dict({"fold": {"encoder": "lstm"}})
    with pytest.raises(InputError, match="fold.conv_layers is set but fold.encoder is 'gru'"):
        TrainConfig.from_dict({"fold": {"conv_layers": 2}})  # a setting that would do nothing: said, not ignored
    with pytest.raises(InputError, match="fold.gru_layers is set but fold.encoder is 'conv'"):
        TrainConfig.from_dict({"fold": {"gru_layers": 2, "encoder": "conv"}})
    assert TrainConfig.from_dict({"fold": {"gru_layers": 3}}).fold.gru_layers == 3
    assert TrainConfig.from_dict({"fold": {"conv_layers": 4, "encoder": "conv"}}).fold.conv_layers == 4


def test_config_from_toml_table():
    import tomllib

    cfg = TrainConfig.from_dict(tomllib.loads("seed = 7\n[xp]\nbeta = 0.01\nin_dim = 343\n[fold]\npatience = 3\n"))
    assert cfg.seed == 7 and cfg.xp.beta == 0.01 and cfg.xp.in_dim == 343 and cfg.fold.patience == 3
    assert cfg.dmdt == TrainConfig().dmdt  # untouched sections keep the paper's values
    assert (cfg.xp.width, cfg.dmdt.width, cfg.dmdt.beta, cfg.fold.beta) == (64, 128, 1e-5, 1e-4)
    assert (cfg.xp.patience, cfg.dmdt.patience) == (20, 10)  # the XP latents gain from longer training
    with pytest.raises(InputError, match="xp.btea"):
        TrainConfig.from_dict({"xp": {"btea": 1.0}})
    with pytest.raises(InputError, match="max_epochs must be an integer"):
        TrainConfig.from_dict({"fold": {"max_epochs": "ten"}})
    assert ModelConfig(**cfg.to_dict()["xp"]) == cfg.xp
    with pytest.raises(InputError, match="threads must be 0"):
        TrainConfig.from_dict({"threads": -1})


def test_training_threads_setting_is_restored(features, tmp_path):
    before = torch.get_num_threads()
    config = fast_config(max_epochs=1, fold_epochs=1, dmdt_epochs=1)
    config.threads = 1
    train(features, tmp_path / "models", config, modalities=("xp",), device="cpu")
    embed(features, tmp_path / "models", tmp_path / "emb", device="cpu", threads=1)
    assert torch.get_num_threads() == before


def test_training_sample_is_stratified_by_magnitude_and_reproducible():
    from latentcat.models.data import magnitude_bin, sample_cuts, sample_key

    rng = np.random.default_rng(4)
    g = np.concatenate([rng.uniform(12.0, 13.0, 600), rng.uniform(17.0, 18.0, 300), np.full(100, np.nan)])
    sid = rng.choice(2**60, g.size, replace=False).astype(np.int64)
    bins, keys = magnitude_bin(g), sample_key(sid)
    cuts = sample_cuts(bins, keys, 100)
    chosen = keys <= cuts[bins]
    # in proportion to the strata: 60 bright, 30 faint, 10 without a G mean (XP only)
    assert [int(chosen[s].sum()) for s in (slice(0, 600), slice(600, 900), slice(900, 1000))] == [60, 30, 10]
    # the same sources whatever the order they come in, and a larger sample holds the smaller one
    perm = rng.permutation(g.size)
    again = sample_cuts(bins[perm], keys[perm], 100)
    assert np.array_equal(keys[perm] <= again[bins[perm]], chosen[perm])
    assert np.all((keys <= sample_cuts(bins, keys, 300)[bins])[chosen])
    assert (keys <= sample_cuts(bins, keys, 5000)[bins]).all()


def test_training_on_a_sample_uses_that_many_sources(features, tmp_path):
    config = TrainConfig.from_dict({"seed": 3, "progress": False, "train_sample": 150, "dmdt": {"max_epochs": 1}})
    summary = train(features, tmp_path / "models", config, modalities=("dmdt",), device="cpu")["models"]["dmdt"]
    assert summary["n_train"] + summary["n_val"] == 150 and summary["n_with_modality"] > 300
    record = json.loads((tmp_path / "models" / "dmdt" / "config.json").read_text())
    assert record["train_sample"] == 150 and record["n_train"] == summary["n_train"]
    # every source is still encoded
    embed(features, tmp_path / "models", tmp_path / "emb", device="cpu")
    has = pq.read_table(tmp_path / "emb", columns=["has_dmdt"]).column("has_dmdt").to_numpy(zero_copy_only=False)
    assert has.sum() == summary["n_with_modality"]
    with pytest.raises(InputError, match="train_sample must be 0"):
        TrainConfig.from_dict({"train_sample": -1})


def test_interrupted_training_resumes_at_its_first_unfinished_model(features, tmp_path):
    config = fast_config(max_epochs=2, fold_epochs=1, dmdt_epochs=2)
    models = tmp_path / "models"
    first = train(features, models, config, modalities=("xp", "dmdt"), device="cpu")["models"]  # fold never started
    weights = {m: (models / m / "model.pt").read_bytes() for m in ("xp", "dmdt")}
    again = train(features, models, config, device="cpu", resume=True)["models"]
    for m in ("xp", "dmdt"):
        assert again[m]["kept"] and (models / m / "model.pt").read_bytes() == weights[m]
        for key in ("n_train", "n_val", "epochs", "best_epoch", "best_val_loss"):
            assert again[m][key] == first[m][key], (m, key)
    assert "kept" not in again["fold"] and (models / "fold" / "model.pt").is_file()
    # a folder whose writing was cut short (config.json is written last), a changed setting, or no
    # resume: trained afresh
    (models / "fold" / "config.json").unlink()
    assert "kept" not in train(features, models, config, modalities=("fold",), device="cpu", resume=True)["models"]["fold"]
    changed = fast_config(max_epochs=3, fold_epochs=1, dmdt_epochs=2)
    assert "kept" not in train(features, models, changed, modalities=("xp",), device="cpu", resume=True)["models"]["xp"]
    assert json.loads((models / "xp" / "config.json").read_text())["model"]["max_epochs"] == 3
    assert "kept" not in train(features, models, config, modalities=("dmdt",), device="cpu")["models"]["dmdt"]


def _trained_codes(features: Path, tmp_path: Path, block: str, settings: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """Train one model with ``settings`` and encode the first shard: the shard's feature columns
    of the sources with that block (a function of the column name), their codes and log-variances."""
    config = TrainConfig.from_dict({"seed": 3, "progress": False, "val_fraction": 0.2, block: settings})
    train(features, tmp_path / "models", config, modalities=(block,), device="cpu")
    embed(features, tmp_path / "models", tmp_path / "emb", device="cpu")
    emb = pq.read_table(tmp_path / "emb" / "embeddings-00000.parquet")
    feats = pq.read_table(features / "features-00000.parquet")
    has = emb.column(f"has_{block}").to_numpy(zero_copy_only=False)
    codes = [np.array([v for v in emb.column(f"{name}_{block}").to_pylist() if v is not None]) for name in ("z", "z_logvar")]
    return (lambda name: feats.column(name).to_numpy(zero_copy_only=False)[has]), *codes


def _embed_without_colour_slope(features: Path, tmp_path: Path) -> None:
    """Encode the first shard as features written before the colour slope existed."""
    old = tmp_path / "old"
    old.mkdir()
    feats = pq.read_table(features / "features-00000.parquet")
    pq.write_table(feats.drop_columns(["colour_slope", "colour_slope_err"]), old / "features-00000.parquet")
    embed(old, tmp_path / "models", tmp_path / "emb-old", device="cpu")


def test_fold_code_holds_the_fold_period_and_amplitude_as_coordinates(features, tmp_path):
    from latentcat.models.data import fold_context
    from latentcat.models.fold_vae import CONTEXT_CENTER, CONTEXT_SCALE

    col, z, logvar = _trained_codes(features, tmp_path, "fold",
                                    {"max_epochs": 2, "width": 16, "harmonics": 4, "context": "coordinates"})
    context = fold_context(*[col(c) for c in ("period", "period_reliable", "time_span", "g_amplitude")])
    np.testing.assert_allclose(z[:, :2], (context - CONTEXT_CENTER[:2]) / CONTEXT_SCALE[:2], rtol=1e-5, atol=1e-5)
    # fold period: twice the period where it is reliable (all of these), log10 in days
    np.testing.assert_allclose(context[:, 0], np.log10(2 * col("period")), rtol=1e-6)
    assert np.all(logvar[:, :2] == -20.0) and np.all(logvar[:, 2:] > -20.0)


def test_fold_code_can_hold_the_colour_slope_as_a_third_coordinate(features, tmp_path):
    from latentcat.models.data import COLOUR_SLOPE_PRIOR, fold_context
    from latentcat.models.fold_vae import CONTEXT_CENTER, CONTEXT_SCALE

    col, z, logvar = _trained_codes(features, tmp_path, "fold",
                                    {"max_epochs": 2, "width": 16, "harmonics": 4, "context": "coordinates+colour"})
    slope = col("colour_slope")
    # a slope measured to 0.03 keeps its value (the prior's sd is 0.25: a pull of 1.4 % towards 0.3)
    w = 1 / 0.03**2
    expected = (w * slope + COLOUR_SLOPE_PRIOR[0] / COLOUR_SLOPE_PRIOR[1] ** 2) / (w + 1 / COLOUR_SLOPE_PRIOR[1] ** 2)
    np.testing.assert_allclose(z[:, 2], (expected - CONTEXT_CENTER[2]) / CONTEXT_SCALE[2], rtol=1e-5, atol=1e-5)
    assert np.all(np.abs(expected - slope) < 0.01)
    assert np.all(logvar[:, :3] == -20.0) and np.all(logvar[:, 3:] > -20.0)
    # no slope measured (no BP or RP epochs): the prior's mean, not a made-up value
    ones = np.ones(2)
    context = fold_context(ones, ones.astype(bool), ones, ones, np.array([np.nan, 0.5]), np.array([np.nan, 1e-4]))
    np.testing.assert_allclose(context[:, 2], [COLOUR_SLOPE_PRIOR[0], 0.5], atol=1e-4)
    # features written before the colour slope existed: the model says what is missing
    with pytest.raises(InputError, match="fold model takes the colour slope .* lack colour_slope"):
        _embed_without_colour_slope(features, tmp_path)


def test_dmdt_code_can_hold_the_colour_slope_as_its_second_coordinate(features, tmp_path):
    from latentcat.models.data import colour_coordinate
    from latentcat.models.dmdt_vae import COLOUR_CENTER, COLOUR_SCALE, CONTEXT_CENTER, CONTEXT_SCALE

    col, z, logvar = _trained_codes(features, tmp_path, "dmdt", {"max_epochs": 2, "width": 16, "context": "coordinates+colour"})
    np.testing.assert_allclose(z[:, 0], (col("g_mean") - CONTEXT_CENTER) / CONTEXT_SCALE, rtol=1e-5, atol=1e-5)
    slope = colour_coordinate(col("colour_slope"), col("colour_slope_err"))
    np.testing.assert_allclose(z[:, 1], (slope - COLOUR_CENTER) / COLOUR_SCALE, rtol=1e-5, atol=1e-5)
    assert np.all(np.abs(slope - col("colour_slope")) < 0.01)  # measured to 0.03: kept
    assert np.all(logvar[:, :2] == -20.0) and np.all(logvar[:, 2:] > -20.0)
    with pytest.raises(InputError, match="dm-dt model takes the colour slope .* lack colour_slope"):
        _embed_without_colour_slope(features, tmp_path)


def test_dmdt_code_holds_the_mean_magnitude_as_a_coordinate(features, tmp_path):
    from latentcat.models.dmdt_vae import CONTEXT_CENTER, CONTEXT_SCALE

    col, z, logvar = _trained_codes(features, tmp_path, "dmdt", {"max_epochs": 2, "width": 16, "context": "coordinates"})
    np.testing.assert_allclose(z[:, 0], (col("g_mean") - CONTEXT_CENTER) / CONTEXT_SCALE, rtol=1e-5, atol=1e-5)
    assert np.ptp(z[:, 1:], axis=0).min() > 0  # the other four are inferred, one per source
    assert np.all(logvar[:, 0] == -20.0) and np.all(logvar[:, 1:] > -20.0)
    with pytest.raises(InputError, match="xp.context must be one of none"):
        TrainConfig.from_dict({"xp": {"context": "coordinates"}})
