"""Feature extraction: cleaned light curves, dm-dt maps, periods and folds, XP vectors."""

SHARD_SIZE = 20_000
"""Default sources per feature shard (``[features] shard_size``)."""

MIN_EPOCHS = 10
"""Default least cleaned G epochs for light-curve features (``[features] min_epochs``)."""
