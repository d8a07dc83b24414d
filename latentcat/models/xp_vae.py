"""VAE of sampled BP/RP (XP) spectra: residual MLP, heteroscedastic Gaussian likelihood."""

from __future__ import annotations

import torch
from torch import nn

from latentcat.models.config import ModelConfig
from latentcat.models.layers import VAE, ResidualMLP, gaussian_nll


class InputStandardiser(nn.Module):
    """Subtract the mean and divide by the spread of each input sample over the training sources.

    The normalised spectra of different stars differ by a few percent around a common shape;
    centring and scaling each sample lets the encoder see those differences at unit scale.
    The mean and variance are running averages over every training batch seen (each batch
    weighted by its size), kept as buffers so they travel with the weights; in evaluation
    mode they are fixed, so a source's code never depends on its batch. The spread is floored
    at ``floor`` so samples that barely vary (the normalisation peak) are not amplified into
    noise. Before any training batch the module is the identity.

    Parameters
    ----------
    dim : int
        Input length.
    floor : float
        Smallest spread divided by, on the scale of the input.
    """

    def __init__(self, dim: int, floor: float) -> None:
        super().__init__()
        self.floor = floor
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised ``x`` (batch, dim); in training mode the statistics take in the batch first."""
        if self.training:
            with torch.no_grad():
                n = x.shape[0]
                total = self.count + n
                delta = x.mean(dim=0) - self.mean
                # pooled mean and variance of everything seen so far and this batch
                self.var.copy_((self.var * self.count + x.var(dim=0, unbiased=False) * n + delta.square() * self.count * n / total) / total)
                self.mean.add_(delta * n / total)
                self.count.copy_(total)
        return (x - self.mean) / self.var.sqrt().clamp_min(self.floor)


class XPVAE(VAE):
    """XP spectrum VAE (Huijse et al. 2025, sect. XP).

    The input is the BP+RP flux divided by the source's 99.5th-percentile flux
    (``in_dim`` samples, 110 for the 2 x 55 latentcat grid). The encoder sees it
    standardised per sample over the training sources (`InputStandardiser`); the decoder
    reconstructs the normalised flux itself. The likelihood is Gaussian with the given flux
    errors, plus ``sigma_floor`` in quadrature.

    Parameters
    ----------
    config : ModelConfig
        Uses ``in_dim``, ``width``, ``blocks``, ``latent_dim``, ``beta`` and ``sigma_floor``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.beta = config.beta
        self.latent_dim = config.latent_dim
        self.sigma_floor = config.sigma_floor
        self.standardise = InputStandardiser(config.in_dim, config.sigma_floor)
        self.encoder = ResidualMLP(config.in_dim, 2 * config.latent_dim, config.width, config.blocks)
        self.decoder = ResidualMLP(config.latent_dim, config.in_dim, config.width, config.blocks)

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance from ``batch['x']`` (batch, in_dim)."""
        mu, logvar = self.encoder(self.standardise(batch["x"])).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed normalised flux (batch, in_dim)."""
        return self.decoder(z)

    def nll(self, batch: dict[str, torch.Tensor], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-source NLL of ``batch['x']`` given ``z``, summed over samples, and the sample count."""
        x, err = batch["x"], batch["err"]
        var = err.square() + self.sigma_floor**2
        n = torch.full((x.shape[0],), x.shape[1], dtype=x.dtype, device=x.device)
        return gaussian_nll(x, self.decode(z), var), n
