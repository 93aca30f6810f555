"""The Arrow shapes of the rows normalization hands to the writer (they mirror migrations/)."""

from __future__ import annotations

import pyarrow as pa

__all__ = ["EMPTY_ROLLUP", "EMPTY_SAMPLES", "LABELSETS", "PROFILES", "SERIES"]

LABELSETS = pa.schema(
    [
        ("labelset_id", pa.binary(8)),
        ("keys", pa.list_(pa.string())),
        ("strs", pa.list_(pa.string())),
        ("nums", pa.list_(pa.int64())),
        ("num_units", pa.list_(pa.string())),
    ]
)
SERIES = pa.schema(
    [
        ("series_id", pa.uint64()),
        ("tenant", pa.string()),
        ("profile_type", pa.string()),
        ("name", pa.string()),
        ("sample_type", pa.string()),
        ("sample_unit", pa.string()),
        ("period_type", pa.string()),
        ("period_unit", pa.string()),
        ("labels", pa.map_(pa.string(), pa.string())),
        ("first_seen", pa.int64()),
        ("last_seen", pa.int64()),
    ]
)
PROFILES = pa.schema(
    [
        ("profile_id", pa.uint64()),
        ("series_id", pa.uint64()),
        ("ts", pa.int64()),
        ("group_id", pa.uint64()),
        ("type_index", pa.int16()),
        ("sample_types", pa.list_(pa.string())),
        ("sample_units", pa.list_(pa.string())),
        ("default_sample_type", pa.string()),
        ("time_nanos", pa.int64()),
        ("duration_ns", pa.int64()),
        ("period", pa.int64()),
        ("total", pa.int64()),
        ("sample_count", pa.int64()),
        ("scale", pa.int64()),
        ("alias_of", pa.int16()),
        ("drop_frames", pa.string()),
        ("keep_frames", pa.string()),
        ("comments", pa.list_(pa.string())),
        ("doc_url", pa.string()),
        ("source", pa.string()),
    ]
)
EMPTY_SAMPLES = pa.table(
    {
        "series_id": pa.array([], pa.uint64()),
        "ts": pa.array([], pa.int64()),
        "stack_id": pa.array([], pa.binary(8)),
        "labelset_id": pa.array([], pa.binary(8)),
        "value": pa.array([], pa.int64()),
        "scale": pa.array([], pa.int64()),
    }
)
EMPTY_ROLLUP = pa.table(
    {
        "series_id": pa.array([], pa.uint64()),
        "ts": pa.array([], pa.int64()),
        "function_id": pa.array([], pa.binary(8)),
        "flat": pa.array([], pa.int64()),
        "cum": pa.array([], pa.int64()),
        "scale": pa.array([], pa.int64()),
    }
)
