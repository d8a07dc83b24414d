"""The three VAEs (XP spectrum, dm-dt map, folded light curve), their trainer and encoder.

Entry points: `latentcat.models.trainer.train`, `latentcat.models.embed.embed` and the
`latentcat.models.config.TrainConfig` they take.
"""

from latentcat.models.config import ModelConfig, TrainConfig

__all__ = ["ModelConfig", "TrainConfig"]
