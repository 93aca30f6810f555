"""DuckDB storage: schema, normalization, the single writer and the reads the query layer uses."""
