"""Findings of regression and leak detection.

One row per finding. ``finding_key`` hashes what makes two runs' findings the same one: kind,
tenant, service, profile type, function (not for a leak, whose top site may move) and metric.
A later run that sees it again updates that row (``last_seen``, current value, p-values) instead
of adding one; a finding that returned to its baseline is ``resolved``, and if it comes back
after that, it is a new row. Estimates are shares of the profile's total for regressions and
the total itself for leaks.

Revision ID: 0003_regressions
Revises: 0002_stack_rollups
"""

from __future__ import annotations

from alembic import context, op

revision = "0003_regressions"
down_revision = "0002_stack_rollups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    key = "" if context.config.attributes.get("lake") else " PRIMARY KEY"  # a DuckLake has no keys
    op.execute(
        """CREATE TABLE regressions (
            id UBIGINT NOT NULL{key},
            finding_key UBIGINT NOT NULL,
            tenant VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            service VARCHAR NOT NULL,
            profile_type VARCHAR NOT NULL,
            series_ids UBIGINT[] NOT NULL,
            function VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,
            change_ts BIGINT NOT NULL,
            baseline DOUBLE NOT NULL,
            baseline_lo DOUBLE NOT NULL,
            baseline_hi DOUBLE NOT NULL,
            current DOUBLE NOT NULL,
            current_lo DOUBLE NOT NULL,
            current_hi DOUBLE NOT NULL,
            relative DOUBLE NOT NULL,
            p_value DOUBLE NOT NULL,
            p_adjusted DOUBLE NOT NULL,
            instances VARCHAR[] NOT NULL,
            attribution JSON NOT NULL,
            details JSON NOT NULL,
            state VARCHAR NOT NULL,
            first_seen BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            acked_at BIGINT,
            resolved_at BIGINT
        )""".replace("{key}", key)
    )


def downgrade() -> None:
    op.execute("DROP TABLE regressions")
