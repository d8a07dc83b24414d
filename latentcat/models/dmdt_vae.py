"""VAE of dm-dt maps: residual MLP with a sigmoid output, Gaussian likelihood per cell."""

from __future__ import annotations

import torch

from latentcat.models.config import ModelConfig
from latentcat.models.layers import VAE, ResidualMLP, gaussian_nll


class DmdtVAE(VAE):
    """dm-dt map VAE (Huijse et al. 2025, sect. dm-dt).

    The input is the 10 x 20 map p(|dm| | dt) flattened dt-major (200 cells in [0, 1]);
    the decoder ends in a sigmoid so the reconstruction stays in [0, 1]. The likelihood is
    Gaussian with the per-cell uncertainties, plus ``sigma_floor`` in quadrature.

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
        """Latent mean and log-variance from ``batch['x']`` (batch, 200)."""
        mu, logvar = self.encoder(batch["x"]).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed map (batch, 200), each cell in (0, 1)."""
        return torch.sigmoid(self.decoder(z))

    def nll(self, batch: dict[str, torch.Tensor], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-source NLL of ``batch['x']`` given ``z``, summed over cells, and the cell count."""
        x, err = batch["x"], batch["err"]
        var = err.square() + self.sigma_floor**2
        n = torch.full((x.shape[0],), x.shape[1], dtype=x.dtype, device=x.device)
        return gaussian_nll(x, self.decode(z), var), n
