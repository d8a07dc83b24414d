"""Gaia DR3 products: archive readers, the staging area, archive fetch and the survey simulator."""
