"""Training speed of the three VAEs at paper size on a large simulated survey, CPU beside CUDA.

Simulates a survey of --n sources (default 200,000), ingests it and computes its features
(--workers processes), then trains each VAE with the paper-size settings of build/dr3.toml for
--epochs epochs on every device asked for (default: the CPU, and CUDA when torch sees a GPU),
and prints per model and device the training samples/s, the seconds per epoch over the
whole survey, and how many times faster than the CPU. The fold VAE is timed with the
paper's GRU (the default) and with the convolutional encoder (the demo's).

On a CPU an epoch over 200,000 folds takes many minutes; --cpu-sample N times the CPU on a
sample of N sources (``train_sample``; samples/s do not depend on it) and gives the seconds
per epoch over the whole survey from that rate.

    python3 benchmarks/gpu.py --n 200000 --epochs 2 --cpu-sample 20000 --work /tmp/gpu
    python3 benchmarks/gpu.py --n 20000 --epochs 1                  # a few minutes, CPU only here
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from latentcat.config import load_build_config
from latentcat.models.config import TrainConfig
from latentcat.models.trainer import train

DR3 = Path(__file__).resolve().parents[1] / "build" / "dr3.toml"


def survey_features(n: int, seed: int, work: Path, workers: int) -> tuple[Path, dict]:
    """The features folder of a simulated survey in ``work`` (made once, reused), and the
    seconds each step took."""
    from latentcat.features.extract import extract_features
    from latentcat.gaia.ingest import ingest
    from latentcat.gaia.simulate import simulate_survey

    seconds = {}
    features = work / "features"
    if not (features / "_features_plan.json").exists():
        t = time.perf_counter()
        simulate_survey(n=n, seed=seed, out=work / "sim")
        seconds["simulate"] = time.perf_counter() - t
        t = time.perf_counter()
        ingest([work / "sim" / "archive"], work / "stage", n_workers=workers)
        seconds["ingest"] = time.perf_counter() - t
        t = time.perf_counter()
        extract_features(work / "stage", features, n_workers=workers)
        seconds["features"] = time.perf_counter() - t
    return features, seconds


def paper_config(epochs: int, sample: int, fold_encoder: str, threads: int) -> TrainConfig:
    """build/dr3.toml's model settings, ``epochs`` epochs each (no early stop), on a sample."""
    cfg = load_build_config(DR3).train
    for m in ("xp", "dmdt", "fold"):
        section = cfg.section(m)
        section.max_epochs = section.patience = epochs
    cfg.fold.encoder = fold_encoder
    cfg.train_sample = sample
    cfg.threads = threads
    cfg.progress = False
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="simulated sources (default 200,000)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per model (default 2)")
    parser.add_argument("--devices", default="", help="comma-separated, e.g. cpu,cuda (default: cpu, and cuda if present)")
    parser.add_argument("--cpu-sample", type=int, default=0, help="train on the CPU on a sample of this many sources (0: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--workers", type=int, default=2, help="processes for ingest and features")
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--work", type=Path, default=Path("gpu_bench"), help="keep the survey and features here")
    args = parser.parse_args()
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    args.work.mkdir(parents=True, exist_ok=True)
    features, seconds = survey_features(args.n, args.seed, args.work, args.workers)
    print(f"survey of {args.n:,} sources (seed {args.seed}) in {args.work}: "
          + (", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) or "reused"))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}; CPU threads {args.threads or torch.get_num_threads()}; GPU: {gpu}\n")

    rates: dict[tuple[str, str], float] = {}
    print(f"{'model':<12}{'device':<8}{'sources':>10}{'samples/s':>12}{'s/epoch (whole survey)':>25}{'x CPU':>8}")
    for device in devices:
        for name, modality, encoder in (("xp", "xp", "gru"), ("dmdt", "dmdt", "gru"),
                                        ("fold GRU", "fold", "gru"), ("fold conv", "fold", "conv")):
            sample = args.cpu_sample if device == "cpu" else 0
            out = args.work / "models" / device / name.replace(" ", "_")
            shutil.rmtree(out, ignore_errors=True)
            report = train(features, out, paper_config(args.epochs, sample, encoder, args.threads),
                           modalities=(modality,), device=device)["models"][modality]
            rate = report["train_samples_per_s"]
            rates[(name, device)] = rate
            trained = report["n_with_modality"] * (1 - TrainConfig().val_fraction)  # an epoch of the whole survey
            cpu = rates.get((name, "cpu"))
            ratio = f"{rate / cpu:.0f}" if cpu and device != "cpu" else ""
            print(f"{name:<12}{device:<8}{report['n_train'] + report['n_val']:>10,}{rate:>12,.0f}"
                  f"{trained / rate:>25,.0f}{ratio:>8}", flush=True)


if __name__ == "__main__":
    main()
