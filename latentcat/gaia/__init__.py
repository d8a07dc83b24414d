"""Gaia DR3 products: finding inputs, archive formats and layouts, the staging area, archive fetch
and the survey simulator."""
