"""Core schema: series, profiles, samples, interned symbols and stacks, function rollups.

Hand-written (duckdb-engine cannot autogenerate). No sequences and no indexes on the fact
tables: ids are content hashes, so any writer can compute them, and DuckDB cannot alter a
table that carries an index (see research/dependencies.md).

Ids that repeat in the fact tables (stack, label set, function) are 8-byte BLOBs rather than
UBIGINT: DuckDB dictionary-compresses BLOB columns but stores random 64-bit integers
uncompressed, which made the stack id the largest part of every sample row. Values are
stored divided by ``scale`` (the gcd of that profile's values of that type — the sampling
period for CPU nanoseconds), so they bit-pack into a few bits. A sample type whose scaled values
equal an earlier type's in the same profile (Go CPU: samples/count and cpu/nanoseconds) has no
rows of its own: its ``profiles`` row names the type it aliases and its scale. Readers use the
views ``sample_values`` and ``rollup_values``, which apply scales and expand aliases.

Revision ID: 0001_core
Revises:
"""

from __future__ import annotations

from alembic import context, op

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

TABLES = {
    "series": """
        series_id UBIGINT{key},
        tenant VARCHAR NOT NULL,
        profile_type VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        sample_type VARCHAR NOT NULL,
        sample_unit VARCHAR NOT NULL,
        period_type VARCHAR NOT NULL,
        period_unit VARCHAR NOT NULL,
        labels MAP(VARCHAR, VARCHAR) NOT NULL,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL
    """,
    "profiles": """
        profile_id UBIGINT NOT NULL,
        series_id UBIGINT NOT NULL,
        ts BIGINT NOT NULL,
        group_id UBIGINT NOT NULL,
        type_index SMALLINT NOT NULL,
        sample_types VARCHAR[] NOT NULL,
        sample_units VARCHAR[] NOT NULL,
        default_sample_type VARCHAR NOT NULL,
        time_nanos BIGINT NOT NULL,
        duration_ns BIGINT NOT NULL,
        period BIGINT NOT NULL,
        total BIGINT NOT NULL,
        sample_count BIGINT NOT NULL,
        scale BIGINT NOT NULL,
        alias_of SMALLINT NOT NULL,
        drop_frames VARCHAR NOT NULL,
        keep_frames VARCHAR NOT NULL,
        comments VARCHAR[] NOT NULL,
        doc_url VARCHAR NOT NULL,
        source VARCHAR NOT NULL
    """,
    "samples": """
        series_id UBIGINT NOT NULL,
        ts BIGINT NOT NULL,
        stack_id BLOB NOT NULL,
        labelset_id BLOB NOT NULL,
        value BIGINT NOT NULL,
        scale BIGINT NOT NULL
    """,
    "stacks": """
        stack_id BLOB NOT NULL,
        location_ids UBIGINT[] NOT NULL,
        function_ids BLOB[] NOT NULL
    """,
    "locations": """
        location_id UBIGINT NOT NULL,
        mapping_id UBIGINT NOT NULL,
        address UBIGINT NOT NULL,
        is_folded BOOLEAN NOT NULL,
        function_ids BLOB[] NOT NULL,
        lines BIGINT[] NOT NULL,
        columns BIGINT[] NOT NULL
    """,
    "functions": """
        function_id BLOB NOT NULL,
        name VARCHAR NOT NULL,
        system_name VARCHAR NOT NULL,
        filename VARCHAR NOT NULL,
        start_line BIGINT NOT NULL
    """,
    "mappings": """
        mapping_id UBIGINT NOT NULL,
        memory_start UBIGINT NOT NULL,
        memory_limit UBIGINT NOT NULL,
        file_offset UBIGINT NOT NULL,
        filename VARCHAR NOT NULL,
        build_id VARCHAR NOT NULL,
        has_functions BOOLEAN NOT NULL,
        has_filenames BOOLEAN NOT NULL,
        has_line_numbers BOOLEAN NOT NULL,
        has_inline_frames BOOLEAN NOT NULL
    """,
    "labelsets": """
        labelset_id BLOB NOT NULL,
        keys VARCHAR[] NOT NULL,
        strs VARCHAR[] NOT NULL,
        nums BIGINT[] NOT NULL,
        num_units VARCHAR[] NOT NULL
    """,
    "function_rollup": """
        series_id UBIGINT NOT NULL,
        ts BIGINT NOT NULL,
        function_id BLOB NOT NULL,
        flat BIGINT NOT NULL,
        cum BIGINT NOT NULL,
        scale BIGINT NOT NULL
    """,
}


# Rows of an aliased type are its source type's rows of the same profile, at its own scale.
_ALIASED = """
    FROM profiles p
    JOIN profiles src ON src.group_id = p.group_id AND src.type_index = p.alias_of
    JOIN {table} x ON x.series_id = src.series_id AND x.ts = src.ts
    WHERE p.alias_of >= 0
"""

VIEWS = {
    "sample_values": f"""
        SELECT series_id, ts, stack_id, labelset_id, value * scale AS value FROM samples
        UNION ALL
        SELECT p.series_id, p.ts, x.stack_id, x.labelset_id, x.value * p.scale AS value {_ALIASED.format(table="samples")}
    """,
    "rollup_values": f"""
        SELECT series_id, ts, function_id, flat * scale AS flat, cum * scale AS cum FROM function_rollup
        UNION ALL
        SELECT p.series_id, p.ts, x.function_id, x.flat * p.scale AS flat, x.cum * p.scale AS cum
        {_ALIASED.format(table="function_rollup")}
    """,
}


def _key() -> str:
    """``series_id`` is the key of a DuckDB file's series; a DuckLake has no keys (its writers
    check before they insert, see service/store/lake.py)."""
    return "" if context.config.attributes.get("lake") else " PRIMARY KEY"


def upgrade() -> None:
    for name, columns in TABLES.items():
        op.execute(f"CREATE TABLE {name} ({columns.replace('{key}', _key())})")
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
    for name in reversed(TABLES):
        op.execute(f"DROP TABLE {name}")
