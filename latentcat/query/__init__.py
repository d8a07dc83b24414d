"""Read-only access to a latentcat catalogue: SQL and nearest-neighbour search."""

from latentcat.query.catalog import Catalog, open

__all__ = ["Catalog", "open"]
