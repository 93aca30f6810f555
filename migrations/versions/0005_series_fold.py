"""Series as readers see them: ``series_seen``, and the watermark of the last fold, ``series_fold``.

On a DuckDB file the writer updates ``series.first_seen/last_seen`` in every batch, as before:
``series_seen`` is ``series`` itself and ``series_fold`` holds the largest BIGINT (nothing is
left to fold). On a DuckLake several nodes write at once, and an UPDATE of ``series`` in every
batch made their commits conflict (and rewrote the table's file each time). There the writers
only append; ``series_fold.snapshot`` is the lake snapshot up to which the maintenance node
folded ``profiles`` into ``series`` (:func:`service.store.series_fold.fold`), and
``series_seen`` widens each series' first/last seen with the profiles committed after it (the
``snapshot_id`` of a lake row is its commit's, so the scan reads only the files added since the
fold; the fold writes the watermark into the view too), and collapses the copies of a series that two nodes inserted at once (the lake has no
key). Readers name ``series_seen`` wherever they need first/last seen or one row per series.

Revision ID: 0005_series_fold
Revises: 0004_series_label_index
"""

from __future__ import annotations

from alembic import context, op

revision = "0005_series_fold"
down_revision = "0004_series_label_index"
branch_labels = None
depends_on = None

NOTHING_TO_FOLD = 2**63 - 1

_LAKE_VIEW = """
    SELECT s.series_id, s.tenant, s.profile_type, s.name, s.sample_type, s.sample_unit, s.period_type,
        s.period_unit, any_value(s.labels) AS labels,
        least(min(s.first_seen), any_value(t.f)) AS first_seen,
        greatest(max(s.last_seen), any_value(t.l)) AS last_seen
    FROM series s LEFT JOIN (
        SELECT series_id, min(ts) AS f, max(ts) AS l FROM profiles
        WHERE snapshot_id > 0 GROUP BY series_id
    ) t ON t.series_id = s.series_id
    GROUP BY s.series_id, s.tenant, s.profile_type, s.name, s.sample_type, s.sample_unit, s.period_type,
        s.period_unit
"""


def upgrade() -> None:
    lake = bool(context.config.attributes.get("lake"))
    op.execute("CREATE TABLE series_fold (snapshot BIGINT NOT NULL)")
    # On a lake, 0: every profile is in the tail until the first fold (exact, if slower at first).
    # The view names the watermark as a literal, which each fold writes again with the table
    # (service.store.series_fold.lake_view): reading it from the table costs every read one more
    # catalog lookup on a lake (about 20 ms, measured).
    op.execute(f"INSERT INTO series_fold VALUES ({0 if lake else NOTHING_TO_FOLD})")
    op.execute(f"CREATE VIEW series_seen AS {_LAKE_VIEW if lake else 'SELECT * FROM series'}")


def downgrade() -> None:
    op.execute("DROP VIEW series_seen")
    op.execute("DROP TABLE series_fold")
