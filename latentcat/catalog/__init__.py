"""The catalogue: DuckDB tables (DDL in sql/), FAISS indexes, and the build that writes them."""
