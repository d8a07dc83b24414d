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
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from rich.console import Console
from rich.progress import track

from latentcat.errors import InputError
from latentcat.models.config import MODALITIES
from latentcat.models.data import ModalityArrays, batch_indices, list_shards, load_modality, make_batch
from latentcat.models.layers import VAE
from latentcat.models.trainer import WEIGHTS, load_model, resolve_device, torch_threads


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
    features_dir: Path, models_dir: Path, out: Path, device: str = "auto", batch_size: int = 4096, threads: int = 0
) -> dict:
    """Encode every feature shard with the trained models in ``models_dir``.

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
    batch_size : int
        Sources per forward pass.
    threads : int
        torch CPU threads while encoding; 0 keeps torch's setting (see
        `latentcat.models.config.TrainConfig`; use 1 on a machine shared with other jobs).

    Returns
    -------
    dict
        n_sources, n_shards, models used, sources per modality, seconds, sources_per_s.
    """
    shards = list_shards(Path(features_dir))
    models_dir, out = Path(models_dir), Path(out)
    dev = resolve_device(device)
    models = {m: load_model(models_dir / m, dev) for m in MODALITIES if (models_dir / m / WEIGHTS).exists()}
    if not models:
        raise InputError(f"{models_dir}: no trained model folder (xp/, dmdt/ or fold/ with {WEIGHTS})")
    out.mkdir(parents=True, exist_ok=True)
    counts = {m: 0 for m in MODALITIES}
    t0 = time.perf_counter()
    with torch_threads(threads):
        n_sources = _embed_shards(shards, models, out, counts, batch_size, dev)
    seconds = time.perf_counter() - t0
    return {
        "n_sources": n_sources,
        "n_shards": len(shards),
        "models": sorted(models),
        "sources_with": counts,
        "device": str(dev),
        "seconds": seconds,
        "sources_per_s": n_sources / seconds if seconds > 0 else float("nan"),
    }


def _embed_shards(shards: list[Path], models: dict, out: Path, counts: dict, batch_size: int, dev: torch.device) -> int:
    """Write one embeddings shard per features shard; returns the number of sources."""
    n_sources = 0
    for shard in track(shards, description="embed (shards)", console=Console(stderr=True), transient=True):
        source_id = pq.read_table(shard, columns=["source_id"]).column("source_id").to_numpy().astype(np.int64)
        columns: dict[str, pa.Array] = {"source_id": pa.array(source_id, pa.int64())}
        blocks = {}
        for m in MODALITIES:
            present = np.zeros(len(source_id), dtype=bool)
            mu = logvar = np.zeros((0, 5), np.float32)
            recon = np.zeros(0, np.float32)
            if m in models:
                model, record = models[m]
                arrays = load_modality(shard, m, record["model"]["in_dim"] or None)
                present = arrays.present
                mu, logvar, recon = encode_arrays(model, arrays, batch_size, dev)
            blocks[m] = (present, mu, logvar, recon)
            counts[m] += int(present.sum())
        for m, (present, mu, _, _) in blocks.items():
            columns[f"z_{m}"] = _nullable_lists(mu, present)
        for m, (present, _, logvar, _) in blocks.items():
            columns[f"z_logvar_{m}"] = _nullable_lists(logvar, present)
        for m, (present, _, _, _) in blocks.items():
            columns[f"has_{m}"] = pa.array(present, pa.bool_())
        for m, (present, _, _, recon) in blocks.items():
            columns[f"recon_loss_{m}"] = _nullable_floats(recon, present)
        name = shard.name.replace("features-", "embeddings-", 1)
        tmp = out / (name + ".tmp")
        pq.write_table(pa.table(columns), tmp)
        tmp.replace(out / name)
        n_sources += len(source_id)
    return n_sources
