"""The Arrow shapes of the rows normalization hands to the writer (they mirror migrations/)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from service.store.ids import blob_ids

__all__ = ["EMPTY_ROLLUP", "EMPTY_SAMPLES", "LABELSETS", "PROFILES", "SERIES", "rollup_table", "samples_table"]

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


def samples_table(
    series_id: npt.NDArray[np.uint64],
    ts: npt.NDArray[np.int64],
    stack: npt.NDArray[np.uint64],
    labelset: npt.NDArray[np.uint64],
    value: npt.NDArray[np.int64],
    scale: npt.NDArray[np.int64],
) -> pa.Table:
    """``samples`` rows from columns (zero-copy but for the ids, which become 8-byte BLOBs)."""
    return pa.table(
        {
            "series_id": pa.array(series_id, pa.uint64()),
            "ts": pa.array(ts, pa.int64()),
            "stack_id": blob_ids(stack),
            "labelset_id": blob_ids(labelset),
            "value": pa.array(value, pa.int64()),
            "scale": pa.array(scale, pa.int64()),
        }
    )


def rollup_table(
    series_id: npt.NDArray[np.uint64],
    ts: npt.NDArray[np.int64],
    function: npt.NDArray[np.uint64],
    flat: npt.NDArray[np.int64],
    cum: npt.NDArray[np.int64],
    scale: npt.NDArray[np.int64],
) -> pa.Table:
    """``function_rollup`` rows from columns."""
    return pa.table(
        {
            "series_id": pa.array(series_id, pa.uint64()),
            "ts": pa.array(ts, pa.int64()),
            "function_id": blob_ids(function),
            "flat": pa.array(flat, pa.int64()),
            "cum": pa.array(cum, pa.int64()),
            "scale": pa.array(scale, pa.int64()),
        }
    )


_NONE_U64, _NONE_I64 = np.zeros(0, np.uint64), np.zeros(0, np.int64)
EMPTY_SAMPLES = samples_table(_NONE_U64, _NONE_I64, _NONE_U64, _NONE_U64, _NONE_I64, _NONE_I64)
EMPTY_ROLLUP = rollup_table(_NONE_U64, _NONE_I64, _NONE_U64, _NONE_I64, _NONE_I64, _NONE_I64)
