"""profstore: continuous-profiling storage for Go pprof endpoints, on DuckDB."""

__version__ = "0.1.0"
