"""Feature extraction: cleaned light curves, dm-dt maps, periods and folds, XP vectors."""
