"""Settings, declared once.

Values come from (highest first) command-line flags, ``PROFSTORE_*`` environment variables,
the YAML file given with ``--config``, and the defaults below. Every field is documented in the
README's configuration table; a test checks that the table and this class agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import InvalidRequest
from service.pprof.decode import DecodeLimits

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROFSTORE_", extra="forbid")

    data_dir: Path = Field(Path("./data"), description="Directory of the DuckDB file (profstore.duckdb).")
    listen: str = Field("127.0.0.1:4040", description="HOST:PORT the HTTP server binds.")
    max_compressed_bytes: int = Field(
        64 << 20, gt=0, description="Largest accepted request body / profile, compressed (413 above)."
    )
    max_uncompressed_bytes: int = Field(
        256 << 20, gt=0, description="Largest profile after gunzip; stops gzip bombs (413 above)."
    )
    query_timeout_s: float = Field(30.0, gt=0, description="Reads running longer are interrupted and answered 503.")
    write_batch_max: int = Field(256, gt=0, description="Most profiles the writer commits in one transaction.")
    max_range_days: float | None = Field(
        None,
        gt=0,
        description="Longest from..until range a query may ask for; unset = no limit (profiles are kept forever).",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"listen must be HOST:PORT, got {v!r}")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_compressed_bytes, self.max_uncompressed_bytes)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML file plus explicit overrides (flags)."""
    values: dict[str, Any] = {}
    if config is not None:
        try:
            loaded = yaml.safe_load(config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidRequest(f"{config}: cannot read config: {exc}") from exc
        if not isinstance(loaded, dict):
            raise InvalidRequest(f"{config}: the config must be a mapping of settings")
        unknown = sorted(set(loaded) - set(Settings.model_fields))
        if unknown:
            raise InvalidRequest(
                f"{config}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(Settings.model_fields)}"
            )
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        where = f"{config}: " if config else ""
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors())
        raise InvalidRequest(f"{where}invalid settings: {msgs}") from None
