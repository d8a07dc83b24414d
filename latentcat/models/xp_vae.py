"""VAE of sampled BP/RP (XP) spectra: residual MLP, heteroscedastic Gaussian likelihood."""

from __future__ import annotations

import torch

from latentcat.models.config import ModelConfig
from latentcat.models.layers import VAE, ResidualMLP, gaussian_nll


class XPVAE(VAE):
    """XP spectrum VAE (Huijse et al. 2025, sect. XP).

    The input is the BP+RP flux divided by the source's 99.5th-percentile flux
    (``in_dim`` samples, 110 for the 2 x 55 latentcat grid). The likelihood is Gaussian
    with the given flux errors, plus ``sigma_floor`` in quadrature.

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
        self.encoder = ResidualMLP(config.in_dim, 2 * config.latent_dim, config.width, config.blocks)
        self.decoder = ResidualMLP(config.latent_dim, config.in_dim, config.width, config.blocks)

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance from ``batch['x']`` (batch, in_dim)."""
        mu, logvar = self.encoder(batch["x"]).chunk(2, dim=-1)
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
