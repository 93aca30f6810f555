"""Stack rollups: each series' stacks summed per minute and per hour, for long-range merges.

``stack_rollup`` holds, per resolution (60 or 3600 seconds), series and bucket start, the sum
of each stack's values (already multiplied by their scales, aliases expanded) over the profiles
in the bucket. ``rollup_state`` says up to where each resolution is complete; a profile that
arrives for a bucket already rolled up marks it in ``rollup_dirty`` (in the same transaction),
and the query planner reads raw samples wherever a dirty bucket would be used, until the
compaction job has recomputed it.

Revision ID: 0002_stack_rollups
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

revision = "0002_stack_rollups"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE stack_rollup (
            resolution INTEGER NOT NULL,
            series_id UBIGINT NOT NULL,
            bucket BIGINT NOT NULL,
            stack_id BLOB NOT NULL,
            value BIGINT NOT NULL
        )"""
    )
    op.execute("CREATE TABLE rollup_state (resolution INTEGER NOT NULL, done_until BIGINT NOT NULL)")
    op.execute("INSERT INTO rollup_state VALUES (60, 0), (3600, 0)")
    op.execute(
        "CREATE TABLE rollup_dirty (resolution INTEGER NOT NULL, series_id UBIGINT NOT NULL, bucket BIGINT NOT NULL)"
    )


def downgrade() -> None:
    for name in ("rollup_dirty", "rollup_state", "stack_rollup"):
        op.execute(f"DROP TABLE {name}")
