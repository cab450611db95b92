"""The embedded DuckDB backend."""
