"""The label index of series: postings and distinct label values, built from the stored series.

``series_labels(tenant, name, value, series_id)`` has one row per stored label of each series,
``series_label_values(tenant, name, value)`` each distinct value once (see
service/store/series_index.py for why). Plain tables without keys, so the same schema works in
a catalog shared by several nodes; the writer fills them in the transaction that inserts a
series, retention trims them with the series. Rows are inserted sorted by tenant, name and
value, so DuckDB skips the row groups of other labels by their min/max.

Revision ID: 0004_series_label_index
Revises: 0003_regressions
"""

from __future__ import annotations

from alembic import op

revision = "0004_series_label_index"
down_revision = "0003_regressions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE series_labels (
            tenant VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            value VARCHAR NOT NULL,
            series_id UBIGINT NOT NULL
        )"""
    )
    op.execute(
        """CREATE TABLE series_label_values (
            tenant VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            value VARCHAR NOT NULL
        )"""
    )
    op.execute(
        "INSERT INTO series_labels SELECT * FROM (SELECT tenant, unnest(map_keys(labels)) AS name, "
        "unnest(map_values(labels)) AS value, series_id FROM series) ORDER BY tenant, name, value, series_id"
    )
    op.execute("INSERT INTO series_label_values SELECT DISTINCT tenant, name, value FROM series_labels ORDER BY ALL")


def downgrade() -> None:
    op.execute("DROP TABLE series_label_values")
    op.execute("DROP TABLE series_labels")
