"""Apply Alembic migrations to a DuckDB file (``profstore migrate``; ``serve`` does it at start)."""

from __future__ import annotations

import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError

from service.errors import StoreError

__all__ = ["MIGRATIONS", "DataDirInUse", "in_use", "upgrade"]

# DuckDB's IOException when another process holds the file: "... Conflicting lock is held in <exe> (PID 1234) ..."
_LOCK = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


class DataDirInUse(StoreError):
    """The DuckDB file is locked by another process: a file admits one process, so a second ``serve`` or a
    ``migrate`` beside a running server must stop here with who holds it, not with DuckDB's stack of errors."""

    def __init__(self, path: Path, pid: int, exe: str) -> None:
        super().__init__(
            f"{path} is in use by another process (PID {pid}, {Path(exe).name}): profstore is probably already "
            "running on this data directory; stop it or use another --data-dir"
        )
        self.path, self.pid, self.exe = path, pid, exe


def in_use(path: Path, exc: BaseException) -> DataDirInUse | None:
    """``exc`` (DuckDB's, or SQLAlchemy's wrapping it) as :class:`DataDirInUse` when it is the lock conflict."""
    m = _LOCK.search(str(exc))
    return DataDirInUse(path, int(m["pid"]), m["exe"]) if m else None


MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def upgrade(db_path: Path, revision: str = "head") -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(f"duckdb:///{db_path}")
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except DBAPIError as exc:
        locked = in_use(db_path, exc)
        if locked is not None:
            raise locked from exc
        raise
    finally:
        engine.dispose()
