"""Settings, declared once.

Values come from (highest first) command-line flags, ``PROFSTORE_*`` environment variables,
the YAML file given with ``--config``, and the defaults below. Every field is documented in the
README's configuration table; a test checks that the table and this class agree.

A bad setting is reported as ``file:line: path: message`` (``/etc/profstore.yaml:7:
scrape_configs[0].scrape_interval: invalid duration '15x' …``), one line per problem: the YAML is
composed into a node tree, and each pydantic error's ``loc`` is walked down that tree to the line
it is about (or the nearest enclosing one). A value that came from a flag or the environment is
named by the flag or variable instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, SettingsError

from service.errors import InvalidRequest
from service.scrape_config import ScrapeConfig, config_error
from service.types import DecodeLimits, check_tenant

__all__ = [
    "AnalysisSettings",
    "AuthSettings",
    "RetentionSettings",
    "Settings",
    "error_path",
    "full_loc",
    "load_settings",
    "locate",
    "located_errors",
    "parse_yaml",
    "read_text",
    "read_yaml",
]

_ENV_PREFIX = "PROFSTORE_"


class AnalysisSettings(BaseModel):
    """Regression and leak detection (``analysis:`` in the YAML); the README's second table documents each field."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run detection on a schedule in the serve process.")
    interval_s: float = Field(300.0, gt=0, description="How often the scheduled run (regressions and leaks) starts.")
    leak_interval_s: float = Field(
        60.0, gt=0, description="How often a leak-only run starts in between (cheap: gauges over leak_window_s)."
    )
    recent_s: float = Field(1800.0, gt=0, description="The recent window tested, ending at the run's time.")
    recent_long_s: float = Field(
        7200.0,
        ge=0,
        description="A second, longer recent window tested in the same run (0: none); small rises that last "
        "are found in it.",
    )
    recent_short_s: float = Field(
        600.0,
        ge=0,
        description="A shorter recent window tested in the same run (0: none); a large rise is found at the "
        "first run after it, before it fills the recent window.",
    )
    baseline_s: float = Field(86400.0, gt=0, description="Length of the baseline window.")
    baseline_offset_s: float = Field(
        0.0, ge=0, description="Gap between baseline and recent window (e.g. 604800 - recent_s: same hours a week ago)."
    )
    leak_window_s: float = Field(1800.0, gt=0, description="Window of the leak trend tests, ending at the run's time.")
    alpha: float = Field(
        0.0001,
        gt=0,
        lt=1,
        description="False discovery rate over all tests of a run; runs repeat every interval_s, so this "
        "also sets false findings per week (bench/regressions.py measures it).",
    )
    min_share: float = Field(
        0.005, ge=0, lt=1, description="Cum share of the recent window a function needs to be tested."
    )
    min_relative: float = Field(
        0.005,
        ge=0,
        description="Smallest relative rise of a share reported (a +1 % slowdown raises its function's share by 1 % less that share).",
    )
    min_delta: float = Field(0.0001, ge=0, description="Smallest absolute rise of a share reported.")
    persist_s: float = Field(
        300.0,
        gt=0,
        description="A rise must hold this long, up to the run's time, to be reported (one run interval: a "
        "change is reported by the second run that sees it at the latest).",
    )
    min_profiles: int = Field(8, ge=3, description="Fewest profiles per window for a test.")
    attribution_labels: list[str] = Field(
        ["version", "commit", "revision", "image"],
        description="Labels whose change at the change point a finding names (not part of an instance's identity).",
    )
    leak_min_bytes_per_min: float = Field(262144.0, ge=0, description="Slowest growth of in-use bytes called a leak.")
    leak_min_count_per_min: float = Field(
        1.0, ge=0, description="Slowest growth of objects or goroutines called a leak."
    )
    leak_min_growth: float = Field(
        0.05, ge=0, description="Growth over the leak window, relative to its start, called a leak."
    )
    timeout_s: float = Field(300.0, gt=0, description="Longest a run may read.")
    webhook_url: str | None = Field(None, description="POST a JSON document per new finding to this URL.")
    webhook_attempts: int = Field(5, ge=1, description="Tries per webhook delivery (exponential backoff from 1 s).")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Timeout of one webhook request.")


Scope = Literal["read", "write", "admin"]


class TokenConfig(BaseModel):
    """One API token (``auth.tokens[]``): only its SHA-256 is configured, so the file holds no secret."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Who holds it; named in logs, never the token itself.")
    sha256: str = Field(description="Hex SHA-256 of the token (`profstore token` makes a token and its hash).")
    scopes: list[Scope] = Field(
        min_length=1, description="read (queries), write (ingest, push, ack), admin (everything, reload, storage)."
    )
    tenants: list[str] = Field(["*"], min_length=1, description="Tenants it may use; `*` is every tenant.")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.strip().lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("sha256 must be 64 hex digits (the SHA-256 of the token, not the token)")
        return v

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, v: list[str]) -> list[str]:
        for t in v:
            if t != "*":
                try:
                    check_tenant(t)
                except InvalidRequest as exc:
                    raise ValueError(str(exc)) from None
        return v


class AuthSettings(BaseModel):
    """Access control (``auth:`` in the YAML). No tokens: every request is allowed (refused off loopback)."""

    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenConfig] = Field(default_factory=list, description="API tokens; empty = no authentication.")
    public_healthz: bool = Field(True, description="`/healthz` answers without a token (load balancers).")
    public_metrics: bool = Field(True, description="`/metrics` answers without a token (Prometheus).")

    @field_validator("tokens")
    @classmethod
    def _unique(cls, tokens: list[TokenConfig]) -> list[TokenConfig]:
        seen: set[str] = set()
        for i, t in enumerate(tokens):
            if t.sha256 in seen:
                raise config_error(f"token {t.name!r} has the same sha256 as an earlier token", i, "sha256")
            seen.add(t.sha256)
        return tokens


class RetentionRule(BaseModel):
    """One override (``retention.rules[]``): the first rule matching a series' tenant and profile type wins."""

    model_config = ConfigDict(extra="forbid")

    tenant: str = Field("*", description="A tenant id, or `*` for any.")
    profile_type: str = Field("*", description="A profile type (`memory:inuse_space:bytes:space:bytes`), or `*`.")
    days: float = Field(gt=0, description="How long raw profiles of the matching series are kept.")


class RetentionSettings(BaseModel):
    """How long data is kept (``retention:`` in the YAML); an hourly job deletes what is older."""

    model_config = ConfigDict(extra="forbid")

    days: float = Field(31.0, gt=0, description="Raw profiles (samples) kept by default, per tenant and type.")
    rules: list[RetentionRule] = Field(default_factory=list, description="Overrides per tenant and profile type.")
    rollup_days: float = Field(
        400.0,
        gt=0,
        description="Per-function and stack rollups and profile totals (long-range queries, detection) are kept "
        "this long, and at least as long as the raw data.",
    )
    interval_s: float = Field(3600.0, gt=0, description="How often the retention job runs.")

    def raw_days(self, tenant: str, profile_type: str) -> float:
        for r in self.rules:
            if r.tenant in ("*", tenant) and r.profile_type in ("*", profile_type):
                return r.days
        return self.days


class S3Settings(BaseModel):
    """Object storage for a lake's data files (``storage.s3``); unset fields come from the usual AWS
    environment variables, as every S3 client takes them."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = Field(None, description="HOST:PORT of an S3-compatible server; unset = AWS.")
    region: str | None = Field(None, description="Region; unset = AWS_REGION or AWS_DEFAULT_REGION, else us-east-1.")
    key_id: str | None = Field(None, description="Access key id; unset = AWS_ACCESS_KEY_ID.")
    secret: str | None = Field(None, description="Secret access key; unset = AWS_SECRET_ACCESS_KEY.")
    url_style: Literal["vhost", "path"] = Field("vhost", description="`path` for most S3-compatible servers.")
    use_ssl: bool = Field(True, description="HTTPS to the endpoint.")


class StorageSettings(BaseModel):
    """Where profiles are stored (``storage:``): the embedded DuckDB file, or a DuckLake."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["duckdb", "ducklake"] = Field(
        "duckdb",
        description="`duckdb`: one file under data_dir. `ducklake`: a catalog in PostgreSQL, data files in data_path.",
    )
    catalog: str | None = Field(
        None, description="ducklake: the PostgreSQL catalog as libpq takes it (`dbname=lake host=… user=…`)."
    )
    data_path: str | None = Field(None, description="ducklake: `s3://bucket/prefix/` or a directory for data files.")
    s3: S3Settings = Field(default_factory=S3Settings, description="ducklake on S3: endpoint and credentials.")

    @model_validator(mode="after")
    def _lake_is_complete(self) -> StorageSettings:
        if self.backend == "ducklake":
            missing = [k for k in ("catalog", "data_path") if not getattr(self, k)]
            if missing:
                raise ValueError(f"storage.backend ducklake needs storage.{' and storage.'.join(missing)}")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_ENV_PREFIX, extra="forbid")

    data_dir: Path = Field(Path("./data"), description="Directory of the DuckDB file (profstore.duckdb).")
    listen: str = Field("127.0.0.1:4040", description="HOST:PORT the HTTP server binds.")
    max_compressed_bytes: int = Field(
        64 << 20, gt=0, description="Largest accepted request body / profile, compressed (413 above)."
    )
    max_uncompressed_bytes: int = Field(
        256 << 20, gt=0, description="Largest profile after gunzip; stops gzip bombs (413 above)."
    )
    query_timeout_s: float = Field(30.0, gt=0, description="Reads running longer are interrupted and answered 503.")
    max_concurrent_queries: int = Field(
        2, gt=0, description="Queries running at once; more wait their turn, so ingestion keeps its share of CPU."
    )
    request_body_timeout_s: float = Field(
        60.0, gt=0, description="A request body must arrive within this time (408 after): slow clients hold nothing."
    )
    write_batch_max: int = Field(256, gt=0, description="Most profiles the writer commits in one transaction.")
    write_batch_linger_s: float = Field(
        0.25,
        ge=0,
        description="How long the writer gathers acknowledged profiles before it commits them to DuckDB (unless "
        "write_batch_max is reached or a read waits for them): a commit costs the same for one profile as for many.",
    )
    write_max_pending: int = Field(
        2048,
        gt=0,
        description="Most acknowledged profiles waiting in the journal for their DuckDB commit; past it, new "
        "pushes wait for the writer (memory stays bounded when the disk is slower than the clients).",
    )
    ingest_workers: int = Field(
        0,
        ge=0,
        description="Processes that decode and stage pushed pprof bodies outside the server's interpreter lock; "
        "0 = in the serving process (on 2 cores the hand-over costs more than it frees: see README).",
    )
    duckdb_memory_limit: str | None = Field(
        None,
        description="DuckDB's memory_limit (`512MB`, `2GB`): what its buffer pool may cache; unset = DuckDB's "
        "default, 80 % of RAM.",
    )
    access_log: bool = Field(False, description="Log a line per HTTP request (uvicorn's access log).")
    checkpoint_idle_bytes: int = Field(
        16 << 20,
        gt=0,
        description="Write-ahead log size at which the writer checkpoints between batches when nothing waits.",
    )
    checkpoint_busy_bytes: int = Field(
        64 << 20,
        gt=0,
        description="Write-ahead log size at which the writer checkpoints even while profiles wait (it is also "
        "the most a restart after a crash replays).",
    )
    compaction_interval_s: float = Field(
        60.0, gt=0, description="How often minute and hour stack rollups are brought up to date."
    )
    max_range_days: float | None = Field(
        None,
        gt=0,
        description="Longest from..until range a query may ask for; unset = no limit (profiles are kept forever).",
    )
    scrape_concurrency: int = Field(
        1000, gt=0, description="Most scrapes (sockets) open at once; a CPU scrape holds one for its `seconds`."
    )
    scrape_max_pending_stores: int = Field(
        1024,
        gt=0,
        description="Most scraped profiles waiting to be stored; past it, runs are skipped (reason store_backlog) "
        "until the writer catches up, so a slow disk bounds memory instead of growing it.",
    )
    max_samples: int = Field(
        1_000_000, gt=0, description="A scraped profile with more samples is refused (error kind too_large)."
    )
    max_stack_depth: int = Field(
        1024, gt=0, description="Deeper scraped stacks keep their innermost frames; the profile is marked truncated."
    )
    analysis: AnalysisSettings = Field(
        default_factory=AnalysisSettings, description="Regression and leak detection (see the table below)."
    )
    storage: StorageSettings = Field(
        default_factory=StorageSettings, description="The store: the DuckDB file (default) or a DuckLake (below)."
    )
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API tokens and public endpoints (below).")
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings, description="How long raw profiles and rollups are kept (below)."
    )
    scrape_configs: list[ScrapeConfig] = Field(
        default_factory=list,
        description="Jobs the collector scrapes: targets (static or file_sd) and their pprof endpoints.",
    )

    # Set by load_settings: file_sd globs are relative to the config file's directory.
    _config_dir: Path | None = PrivateAttr(None)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"listen must be HOST:PORT, got {v!r}")
        return v

    @field_validator("scrape_configs", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v

    @field_validator("scrape_configs")
    @classmethod
    def _unique_jobs(cls, configs: list[ScrapeConfig]) -> list[ScrapeConfig]:
        first: dict[str, int] = {}
        for i, cfg in enumerate(configs):
            if cfg.job_name in first:
                raise config_error(
                    f"duplicate job_name {cfg.job_name!r}; scrape_configs[{first[cfg.job_name]}] already uses it",
                    i,
                    "job_name",
                )
            first[cfg.job_name] = i
        return configs

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_compressed_bytes, self.max_uncompressed_bytes)

    @property
    def config_dir(self) -> Path:
        """The directory relative paths in the config (file_sd globs) start from: the config file's, else the cwd."""
        return self._config_dir if self._config_dir is not None else Path.cwd()


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML file, the environment and explicit overrides (flags)."""
    values: dict[str, Any] = {}
    root: yaml.Node | None = None
    if config is not None:
        loaded, root = read_yaml(config)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InvalidRequest(f"{config}:{_line(root)}: the config must be a mapping of settings")
        unknown = [k for k in loaded if k not in Settings.model_fields]
        if unknown:
            raise InvalidRequest(
                f"{config}:{locate(root, (unknown[0],))}: unknown setting(s) {', '.join(map(str, unknown))}; "
                f"known: {', '.join(Settings.model_fields)}"
            )
        values.update(loaded)
    # Settings(**values) would let the file beat the environment; read the environment here to keep it above.
    try:
        env = EnvSettingsSource(Settings)()
    except SettingsError as exc:
        raise InvalidRequest(f"invalid environment: {exc}") from None
    flags = {k: v for k, v in overrides.items() if v is not None}
    values.update(env)
    values.update(flags)
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            loc = full_loc(err)
            top = loc[0] if loc else None
            if top in flags:
                where = f"--{str(top).replace('_', '-')}"
            elif top in env:
                where = f"{_ENV_PREFIX}{str(top).upper()}"
            elif config is not None:
                where = f"{config}:{locate(root, loc)}"
            else:
                where = "settings"
            messages.append(_message(where, loc, err))
        raise InvalidRequest("\n".join(messages)) from None
    settings._config_dir = config.parent if config is not None else None
    return settings


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The document in ``path`` and its node tree (for line numbers); errors name the file and line.

    A key given twice in one mapping is refused: YAML would silently keep the last one.
    """
    return parse_yaml(read_text(path), path)


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; an error names the file and says why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"{path}: cannot read: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from exc


def parse_yaml(text: str, path: Path | str) -> tuple[Any, yaml.Node | None]:
    """``read_yaml`` for text already read; ``path`` only names the source in errors."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise InvalidRequest(f"{path}{line}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    duplicates = [f"{path}:{line}: {msg}" for line, msg in _duplicate_keys(root, ())] if root is not None else []
    if duplicates:
        raise InvalidRequest("\n".join(duplicates))
    return data, root


def locate(root: yaml.Node | None, loc: Iterable[str | int]) -> int:
    """The line of the node ``loc`` leads to in ``root``, or of its nearest ancestor that exists (1-based).

    A key's own line is used for mapping entries (an unknown or misspelt key is reported there), the
    value's line for a scalar that ends the path (a flow list may span lines).
    """
    if root is None:
        return 1
    node, line = root, _line(root)
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            entry = next((kv for kv in node.value if isinstance(kv[0], yaml.ScalarNode) and kv[0].value == part), None)
            if entry is None:
                break
            node, line = entry[1], _line(entry[0])
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = _line(node)
        else:
            break
    else:
        if isinstance(node, yaml.ScalarNode):
            line = _line(node)
    return line


def full_loc(err: ErrorDetails) -> tuple[str | int, ...]:
    """pydantic's ``loc`` extended by the place a cross-field check points at (see ``config_error``)."""
    at = err.get("ctx", {}).get("at", ())
    return (*err["loc"], *at)


def error_path(loc: Iterable[str | int]) -> str:
    """``scrape_configs[0].static_configs[1].targets[2]``; pydantic's tags such as ``[key]`` are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif not str(part).startswith("["):  # a YAML key may also be a bool or a number
            out += f".{part}" if out else str(part)
    return out


def located_errors(exc: ValidationError, source: Path | str, root: yaml.Node | None) -> list[str]:
    """One ``source:line: path: message`` per error in ``exc``, for a document read with ``read_yaml``."""
    messages = []
    for err in exc.errors():
        loc = full_loc(err)
        where = f"{source}:{locate(root, loc)}" if root is not None else str(source)
        messages.append(_message(where, loc, err))
    return messages


def _message(where: str, loc: tuple[str | int, ...], err: ErrorDetails) -> str:
    text = err["msg"].removeprefix("Value error, ")
    # Our own messages quote the value already; pydantic's generic ones ("Input should be ...") do not.
    if err["type"] not in ("value_error", "config", "missing") and "input" in err:
        text += f" (got {err['input']!r})"
    path = error_path(loc)
    return f"{where}: {path}: {text}" if path else f"{where}: {text}"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _duplicate_keys(node: yaml.Node, loc: tuple[str | int, ...]) -> Iterable[tuple[int, str]]:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name != "<<":
                if name in seen:
                    where = f"{error_path(loc)}: " if loc else ""
                    yield _line(key), f"{where}duplicate key {name!r} (first at line {seen[name]})"
                seen.setdefault(name, _line(key))
            yield from _duplicate_keys(value, (*loc, name) if name is not None else loc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, i))
