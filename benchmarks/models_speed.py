"""Training and encoding speed of the three VAEs, per model, on CPU (and on CUDA when present).

Feature shards of N sources are written with Gaia-like sizes: folds of 20-150 points
(log-normal around 55, as DR3 G light curves after cleaning), 110-sample XP vectors and
200-cell dm-dt maps. The values are random; speed depends on sizes only. ``--features DIR``
uses a real features folder instead.

For each model the real code paths are timed: `latentcat.models.trainer.train` (samples/s of
the training loop alone, validation excluded) and `latentcat.models.embed.embed` with only
that model (sources/s, reading and writing shards included), then `embed` with all three.

    python benchmarks/models_speed.py                   # N = 2,000, a minute or two
    python benchmarks/models_speed.py --n 20000 --epochs 2
    OMP_NUM_THREADS=1 python benchmarks/models_speed.py # or --threads 1 on a busy machine
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import latentcat
from latentcat.models.config import MODALITIES, TrainConfig
from latentcat.models.embed import embed
from latentcat.models.trainer import train


def write_features(path: Path, n: int, seed: int = 0) -> np.ndarray:
    """One features shard of ``n`` sources with random values of realistic sizes; returns fold lengths."""
    rng = np.random.default_rng(seed)
    length = np.clip(np.round(np.exp(rng.normal(np.log(55), 0.45, n))), 20, 150).astype(np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(length)]).astype(np.int32))
    total = int(length.sum())
    # phases sorted within each source: sort random keys offset by the row number
    row = np.repeat(np.arange(n), length)
    phase = np.sort(row + rng.uniform(0, 0.999, total)) - row

    def ragged(values: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, pa.array(values.astype(np.float32)))

    def fixed(values: np.ndarray) -> pa.Array:
        d = values.shape[1]
        return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * d), pa.array(values.reshape(-1).astype(np.float32)))

    mag = 0.5 + 0.4 * np.sin(2 * np.pi * phase) + rng.normal(0, 0.03, total)
    xp = np.abs(rng.normal(0.5, 0.2, (n, 110)))
    dmdt = rng.dirichlet(np.ones(20), (n, 10)).reshape(n, 200)
    table = pa.table(
        {
            "source_id": pa.array(np.arange(n, dtype=np.int64) * 7919 + 10**15),
            "fold_phase": ragged(phase),
            "fold_mag": ragged(np.clip(mag, 0, 1)),
            "fold_err": ragged(rng.uniform(0.01, 0.05, total)),
            "xp_flux": fixed(xp),
            "xp_flux_error": fixed(0.01 + 0.01 * xp),
            "dmdt": fixed(dmdt),
            "dmdt_err": fixed(np.full((n, 200), 0.05)),
        }
    )
    pq.write_table(table, path)
    return length


def run(features: Path, work: Path, device: str, epochs: int, batch_size: int) -> dict:
    """Train each VAE for ``epochs`` epochs (the fold VAE with the paper's GRU, the default,
    and with the convolutional encoder, the demo's), then encode with each alone and all
    together (the defaults)."""
    result: dict = {}
    for name, m, encoder in (("xp", "xp", "gru"), ("dmdt", "dmdt", "gru"), ("fold", "fold", "gru"),
                             ("fold (conv)", "fold", "conv")):
        config = TrainConfig.from_dict({"seed": 0, "progress": False,
                                        **{k: {"max_epochs": epochs, "patience": epochs} for k in MODALITIES}})
        config.fold.encoder = encoder
        folder = work / "models" / ("fold_conv" if encoder == "conv" else m)
        trained = train(features, folder, config, modalities=(m,), device=device)["models"][m]
        only = work / "only" / folder.name
        only.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder / m, only / m, dirs_exist_ok=True)
        cpu0 = time.process_time()
        encoded = embed(features, only, work / "emb" / folder.name, device=device, batch_size=batch_size)
        cpu = time.process_time() - cpu0
        result[name] = (trained["train_samples_per_s"], encoded["sources_per_s"], encoded["n_sources"] / cpu)
    every = work / "all"
    for m in MODALITIES:
        shutil.copytree(work / "models" / m / m, every / m, dirs_exist_ok=True)  # the defaults
    cpu0 = time.process_time()
    encoded = embed(features, every, work / "emb" / "all", device=device, batch_size=batch_size)
    result["all three"] = (float("nan"), encoded["sources_per_s"], encoded["n_sources"] / (time.process_time() - cpu0))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="sources (default 2,000: a minute or two on 2 CPU cores)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs timed per model")
    parser.add_argument("--batch-size", type=int, default=1024, help="sources per encoding batch")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--features", type=Path, help="a real features folder instead of generated shards")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory(prefix="latentcat-models-speed-") as tmp:
        work = Path(tmp)
        features = args.features
        if features is None:
            features = work / "features"
            features.mkdir()
            length = write_features(features / "features-00000.parquet", args.n)
            n, lengths = args.n, f"fold points {int(length.min())}-{int(length.max())}, median {int(np.median(length))}"
        else:
            n = sum(pq.read_metadata(p).num_rows for p in features.glob("features-*.parquet"))
            lengths = str(features)
        print(f"{n} sources ({lengths}); torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
        print(f"latentcat from {Path(latentcat.__file__).parent}")
        for device in devices:
            t0 = time.perf_counter()
            result = run(features, work / device, device, args.epochs, args.batch_size)
            print(f"\n{device} ({time.perf_counter() - t0:.0f} s)")
            print(f"    {'model':<12} {'train samples/s':>16} {'encode sources/s':>17} {'per CPU-second':>15}")
            for m, (train_rate, encode_rate, cpu_rate) in result.items():
                shown = "" if np.isnan(train_rate) else f"{train_rate:.0f}"
                print(f"    {m:<12} {shown:>16} {encode_rate:>17.0f} {cpu_rate:>15.0f}")
            hours = 4e6 / result["all three"][1] / 3600
            print(f"    4 million sources with all three models: {hours:.2f} h at this rate")
    load = os.getloadavg()[0]
    print(f"\nload average {load:.1f} on {os.cpu_count()} cores: on a busy machine wall-clock rates are low;")
    print("'per CPU-second' is the encoding rate per second of CPU this process got (all its threads).")


if __name__ == "__main__":
    main()
