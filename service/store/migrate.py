"""Apply Alembic migrations to a DuckDB file (``profstore migrate``; ``serve`` does it at start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

__all__ = ["MIGRATIONS", "upgrade"]

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def upgrade(db_path: Path, revision: str = "head") -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(f"duckdb:///{db_path}")
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
