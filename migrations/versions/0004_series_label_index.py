"""The label index of series: distinct label values with ids, and postings, built from the stored series.

``series_label_values(tenant, name, value, value_id)`` has each distinct label value once, with
an id (a hash computed here or when the writer first stores the value, and only read back after);
``series_labels(value_id, series_id)`` one row per stored label of each series (see
service/store/series_index.py for why). Plain tables without keys, so the same schema works in a
catalog shared by several nodes; the writer fills them in the transaction that inserts a series,
retention trims them with the series.

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
        """CREATE TABLE series_label_values (
            tenant VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            value VARCHAR NOT NULL,
            value_id UBIGINT NOT NULL
        )"""
    )
    op.execute(
        """CREATE TABLE series_labels (
            value_id UBIGINT NOT NULL,
            series_id UBIGINT NOT NULL
        )"""
    )
    op.execute(
        "CREATE TEMP TABLE _labels AS SELECT tenant, unnest(map_keys(labels)) AS name, "
        "unnest(map_values(labels)) AS value, series_id FROM series"
    )
    op.execute(
        "INSERT INTO series_label_values SELECT tenant, name, value, hash(tenant, name, value) "
        "FROM (SELECT DISTINCT tenant, name, value FROM _labels) ORDER BY ALL"
    )
    op.execute(
        "INSERT INTO series_labels SELECT v.value_id, l.series_id FROM _labels l JOIN series_label_values v "
        "ON v.tenant = l.tenant AND v.name = l.name AND v.value = l.value ORDER BY ALL"
    )
    op.execute("DROP TABLE _labels")


def downgrade() -> None:
    op.execute("DROP TABLE series_label_values")
    op.execute("DROP TABLE series_labels")
