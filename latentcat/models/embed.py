"""Encode feature shards with trained VAEs into embedding shards.

``embeddings-NNNNN.parquet`` (one per ``features-NNNNN.parquet``, same rows, same order):

| column | type | meaning |
| --- | --- | --- |
| source_id | int64 | |
| z_xp, z_dmdt, z_fold | list<float> (5), nullable | latent means; null when the source lacks the modality (or no model of it was trained) |
| z_logvar_xp, z_logvar_dmdt, z_logvar_fold | list<float> (5), nullable | latent log-variances |
| has_xp, has_dmdt, has_fold | bool | the block is present (not null) |
| recon_loss_xp, recon_loss_dmdt, recon_loss_fold | float, nullable | negative log-likelihood per point of the features given the latent mean: an anomaly signal |

The joint 15-D code is z_xp, z_dmdt, z_fold concatenated in that order.

Each shard is one job of :func:`latentcat.compute.shard_runner` (in this process by default,
in local processes, or as a Dask task, docs/dask.md): the job loads the models from
``models_dir`` (once per worker process, kept for its next shards), encodes its shard and
writes the embeddings shard under a temporary name, then renames it. A shard's embeddings do
not depend on where it was encoded (on CPU, with the same ``threads``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from rich.console import Console
from rich.progress import track

from latentcat.compute import check_folders, check_scheduler, check_written, not_on_worker, shard_runner, write_parquet
from latentcat.errors import InputError
from latentcat.models.config import MODALITIES
from latentcat.models.data import ModalityArrays, batch_indices, list_shards, load_modality, make_batch, modality_arrays
from latentcat.models.layers import VAE
from latentcat.models.trainer import WEIGHTS, load_model, resolve_device, torch_threads

SHARED = "features_dir, models_dir and out"  # the folders every worker must reach

_MODELS: dict[tuple, dict] = {}
"""The models this process loaded, kept between shards: {(models_dir, device, weights' mtimes): models}."""


def encode_arrays(
    model: VAE, arrays: ModalityArrays, batch_size: int = 1024, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent means, log-variances and NLL per point of the present rows of one shard.

    Returns
    -------
    mu, logvar : ndarray (n, latent_dim) float32
    recon_loss : ndarray (n,) float32
    """
    dim = getattr(model, "latent_dim", 5)
    mu_out = np.zeros((arrays.n, dim), np.float32)
    logvar_out = np.zeros((arrays.n, dim), np.float32)
    recon_out = np.zeros(arrays.n, np.float32)
    model.eval()
    # folds are batched by length (batch_indices) so little time goes into padding; every
    # source is encoded on its own, and the results are written back in row order
    with torch.inference_mode():
        for idx in batch_indices(arrays, batch_size):
            batch = make_batch(arrays, idx, device)
            mu, logvar = model.encode(batch)
            nll, n_points = model.nll(batch, mu)
            mu_out[idx] = mu.float().cpu().numpy()
            logvar_out[idx] = logvar.float().cpu().numpy()
            recon_out[idx] = (nll / n_points).float().cpu().numpy()
    return mu_out, logvar_out, recon_out


def _nullable_lists(values: np.ndarray, present: np.ndarray) -> pa.Array:
    """list<float> column with one row per source: the values where present, else null."""
    width = values.shape[1] if values.ndim == 2 else 0
    offsets = np.concatenate([[0], np.cumsum(present.astype(np.int32) * width)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1), pa.float32()), mask=pa.array(~present))


def _nullable_floats(values: np.ndarray, present: np.ndarray) -> pa.Array:
    full = np.zeros(len(present), np.float32)
    full[present] = values
    return pa.array(full, pa.float32(), mask=~present)


def embed(
    features_dir: Path, models_dir: Path, out: Path, device: str = "auto", batch_size: int = 4096, threads: int = 0,
    scheduler: str = "processes", address: str | None = None, n_workers: int = 1,
) -> dict:
    """Encode every feature shard with the trained models in ``models_dir``.

    Embedding shards in ``out`` that this run does not write (those of an earlier run with
    more shards) are deleted first, so ``out`` holds exactly the shards of ``features_dir``.

    Parameters
    ----------
    features_dir : Path
        Folder of ``features-NNNNN.parquet`` shards.
    models_dir : Path
        Folder written by `latentcat.models.trainer.train`; any of its ``xp``, ``dmdt``,
        ``fold`` subfolders is used, a missing one gives null blocks.
    out : Path
        Folder for the ``embeddings-NNNNN.parquet`` shards (schema in this module's docstring).
    device : {'auto', 'cpu', 'cuda'}
        Resolved where each shard is encoded ('auto': CUDA when that process sees a GPU).
    batch_size : int
        Sources per forward pass.
    threads : int
        torch CPU threads per shard job; 0 keeps the setting of the process that runs it, or,
        with ``n_workers`` > 1 local processes (a pool or a LocalCluster), gives each
        ``os.cpu_count() // n_workers`` (at least 1). See `latentcat.models.config.TrainConfig`;
        use 1 on a machine shared with other jobs, and keep workers x threads within the cores.
    scheduler : {"processes", "dask"}
        Where the shards are encoded (`latentcat.compute`): local processes, or one Dask task
        per shard. With "dask", ``features_dir``, ``models_dir`` and ``out`` must be paths
        every worker reaches.
    address : str or None
        Address of a running Dask scheduler (``"tcp://host:8786"``); None starts a
        LocalCluster of ``n_workers`` processes for this call.
    n_workers : int
        Processes encoding shards in parallel (1: this process encodes them one by one). With
        "processes" and a CUDA device the shards are always encoded in this process.

    Returns
    -------
    dict
        n_sources, n_shards, models used, sources per modality, device(s), scheduler,
        seconds, sources_per_s.
    """
    shards = list_shards(Path(features_dir))
    check_scheduler(scheduler, address, n_workers)
    models_dir, out = Path(models_dir), Path(out)
    available = [m for m in MODALITIES if (models_dir / m / WEIGHTS).exists()]
    if not available:
        raise InputError(f"{models_dir}: no trained model folder (xp/, dmdt/ or fold/ with {WEIGHTS})")
    if scheduler == "processes" and resolve_device(device).type == "cuda":
        n_workers = 1  # one process feeds the GPU; more would only compete for it
    if threads == 0 and n_workers > 1 and not address:  # local workers share this machine's cores
        threads = max(1, (os.cpu_count() or 1) // n_workers)
    out.mkdir(parents=True, exist_ok=True)
    where = models_dir.resolve(), out.resolve()  # absolute: a worker's working folder is its own
    jobs = [(str(shard.resolve()), str(where[0]), str(where[1] / shard.name.replace("features-", "embeddings-", 1)),
             device, batch_size, threads, available) for shard in shards]
    produced = {Path(job[2]).name for job in jobs}
    for stale in out.glob("embeddings-*.parquet*"):  # temporaries, and shards of an earlier, larger run
        if stale.name not in produced:
            stale.unlink()
    n_sources, counts, devices = 0, {m: 0 for m in MODALITIES}, set()
    t0 = time.perf_counter()
    with shard_runner(scheduler, address, n_workers) as run:
        for n, shard_counts, dev in track(run(_embed_shard, jobs), total=len(jobs), description="embed (shards)",
                                          console=Console(stderr=True), transient=True):
            n_sources += n
            devices.add(dev)
            for m in MODALITIES:
                counts[m] += shard_counts[m]
    _MODELS.clear()  # the jobs that ran in this process loaded them here
    check_written([job[2] for job in jobs], SHARED)
    seconds = time.perf_counter() - t0
    return {
        "n_sources": n_sources,
        "n_shards": len(shards),
        "models": sorted(available),
        "sources_with": counts,
        "device": ", ".join(sorted(devices)),
        "scheduler": scheduler,
        "seconds": seconds,
        "sources_per_s": n_sources / seconds if seconds > 0 else float("nan"),
    }


def _embed_shard(shard: str, models_dir: str, path: str, device: str, batch_size: int,
                 threads: int, modalities: list[str]) -> tuple[int, dict, str]:
    """Encode one features shard and write its embeddings shard atomically (temporary name, then rename).

    One job of :func:`latentcat.compute.shard_runner`: it may run in another process or on
    another host, which must see the three paths and the models of ``modalities`` (those the
    caller found in ``models_dir``). Returns (sources, sources per modality, device used).
    """
    check_folders((Path(shard).parent, models_dir, Path(path).parent), SHARED)
    dev = resolve_device(device)
    models = load_models(Path(models_dir), modalities, dev)
    with torch_threads(threads):
        table, counts = _encode_shard(Path(shard), models, batch_size, dev)
    write_parquet(table, path)
    return table.num_rows, counts, str(dev)


def load_models(models_dir: Path, modalities: list[str] | None = None, dev: torch.device | str = "cpu") -> dict:
    """The models of ``modalities`` (default: every one ``models_dir`` holds) on ``dev``, loaded
    once per process and kept in `_MODELS` (loaded again when a weights file changes):
    {modality: (model, its config record)}."""
    if modalities is None:
        modalities = [m for m in MODALITIES if (Path(models_dir) / m / WEIGHTS).exists()]
    dev = torch.device(dev)
    weights = [models_dir / m / WEIGHTS for m in modalities]
    for w in weights:
        if not w.is_file():
            raise not_on_worker(w, SHARED, "file")
    key = (str(models_dir), str(dev), tuple(w.stat().st_mtime_ns for w in weights), tuple(modalities))
    if key not in _MODELS:
        _MODELS.clear()  # one set of models at a time
        _MODELS[key] = {m: load_model(models_dir / m, dev) for m in modalities}
    return _MODELS[key]


def _encode_shard(shard: Path, models: dict, batch_size: int, dev: torch.device) -> tuple[pa.Table, dict]:
    """The embeddings table of one features shard, and its sources per modality."""
    source_id = pq.read_table(shard, columns=["source_id"]).column("source_id").to_numpy().astype(np.int64)
    return _embeddings(source_id, lambda m, in_dim: load_modality(shard, m, in_dim), models, batch_size, dev)


def encode_table(features: pa.Table, models: dict, batch_size: int = 1024, device: torch.device | str = "cpu",
                 name: str = "features") -> pa.Table:
    """The embeddings of the rows of a features table held in memory (the schema in this
    module's docstring, rows in the same order): what `embed` writes for a shard, without files.

    Parameters
    ----------
    features : pyarrow.Table
        Rows of `latentcat.features.extract.FEATURES_SCHEMA`.
    models : dict
        `load_models` of a catalogue's ``models/`` folder.
    name : str
        Names the table in errors.
    """
    source_id = features.column("source_id").to_numpy().astype(np.int64)
    table, _ = _embeddings(source_id, lambda m, in_dim: modality_arrays(features, m, in_dim, name), models,
                           batch_size, torch.device(device))
    return table


def _embeddings(source_id: np.ndarray, arrays_of, models: dict, batch_size: int,
                dev: torch.device) -> tuple[pa.Table, dict]:
    """The embeddings table of ``source_id``'s rows, each modality's arrays read by
    ``arrays_of(modality, in_dim)``, and the sources per modality."""
    columns: dict[str, pa.Array] = {"source_id": pa.array(source_id, pa.int64())}
    blocks, counts = {}, {}
    for m in MODALITIES:
        present = np.zeros(len(source_id), dtype=bool)
        mu = logvar = np.zeros((0, 5), np.float32)
        recon = np.zeros(0, np.float32)
        if m in models:
            model, record = models[m]
            arrays = arrays_of(m, record["model"]["in_dim"] or None)
            present = arrays.present
            mu, logvar, recon = encode_arrays(model, arrays, batch_size, dev)
        blocks[m] = (present, mu, logvar, recon)
        counts[m] = int(present.sum())
    for m, (present, mu, _, _) in blocks.items():
        columns[f"z_{m}"] = _nullable_lists(mu, present)
    for m, (present, _, logvar, _) in blocks.items():
        columns[f"z_logvar_{m}"] = _nullable_lists(logvar, present)
    for m, (present, _, _, _) in blocks.items():
        columns[f"has_{m}"] = pa.array(present, pa.bool_())
    for m, (present, _, _, recon) in blocks.items():
        columns[f"recon_loss_{m}"] = _nullable_floats(recon, present)
    return pa.table(columns), counts
