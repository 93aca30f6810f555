"""What to scrape: the ``scrape_configs`` settings, as Parca and Prometheus users write them.

A settings model beside :mod:`service.config`, in the base layer (``tests/test_imports.py``): the
settings embed it, and the collector reads it and the settings without the settings importing the
collector.

A job names targets (``static_configs``, ``file_sd_configs``) and the pprof endpoints to scrape on
each (``profiling_config.pprof_config``). The endpoints a job does not mention come from
:data:`DEFAULT_PPROF`; an entry for a default name overrides only the fields it gives, any other
name is a custom endpoint. :attr:`ScrapeConfig.endpoints` is the resolved result.

Validation errors carry, besides pydantic's ``loc``, the place inside the model they are about
(``ctx["at"]``), so that a check spanning fields (timeout vs interval, seconds vs interval,
duplicate job names) points at the one field to change. ``service.config`` turns both into
``file:line: path: message``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator, model_validator
from pydantic_core import PydanticCustomError

from service.errors import InvalidRequest
from service.types import DEFAULT_TENANT, check_tenant

__all__ = [
    "DEFAULT_PPROF",
    "DEFAULT_SCRAPE_INTERVAL_S",
    "DEFAULT_SCRAPE_TIMEOUT_S",
    "Duration",
    "FileSDConfig",
    "PprofConfig",
    "ProfileEndpoint",
    "ProfilingConfig",
    "SampleType",
    "ScrapeConfig",
    "TargetGroup",
    "config_error",
    "format_duration",
    "parse_duration",
]

DEFAULT_SCRAPE_INTERVAL_S: Final = 15.0
DEFAULT_SCRAPE_TIMEOUT_S: Final = 10.0
DEFAULT_REFRESH_INTERVAL_S: Final = 30.0
# An endpoint profiling over ?seconds=S needs S >= 1 and S < interval, hence an interval of 2s at least.
MIN_TIMED_INTERVAL_S: Final = 2.0

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_UNIT_MS: Final = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)
_DURATION_HINT: Final = "use e.g. 500ms, 15s, 1m, 1h30m"
_SD_EXTENSIONS: Final = (".json", ".yml", ".yaml")
# Set by the collector from job_name and the target address; they also make up a target's key.
_COLLECTOR_LABELS: Final = ("job", "instance")


def parse_duration(text: object) -> float:
    """Seconds in a Prometheus duration: units y, w, d, h, m, s, ms from largest to smallest, e.g. ``1h30m``."""
    if isinstance(text, str):
        if text == "0":
            return 0.0
        match = _DURATION.fullmatch(text)
        if text and match is not None:
            return sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_MS, strict=True) if n) / 1000
    raise ValueError(f"invalid duration {text!r} ({_DURATION_HINT})")


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for ``seconds`` (whole milliseconds), e.g. 5400 -> ``1h30m``."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


# Durations are float seconds in Python and Prometheus strings in YAML; dumping gives the string back,
# so a dumped config validates again.
Duration = Annotated[float, BeforeValidator(_positive_duration), PlainSerializer(format_duration, return_type=str)]


def config_error(message: str, *at: str | int) -> PydanticCustomError:
    """A validation error about ``at``, a path below the model or field whose validator raises it."""
    return PydanticCustomError("config", "{detail}", {"detail": message, "at": at})


class _Strict(BaseModel):
    """Unknown keys are refused with the keys allowed at that place; a null collection means empty."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key in data:
            if key not in cls.model_fields:
                allowed = ", ".join(cls.model_fields)
                raise config_error(f"unknown key {key!r}; allowed here: {allowed}", key)
        # `static_configs:` with every entry commented out is YAML null; treat it as empty, not as an error.
        return {
            k: v
            for k, v in data.items()
            if v is not None or cls.model_fields[k].is_required() or cls.model_fields[k].default is None
        }


def _check_label_names(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        if not _LABEL_NAME.fullmatch(name):
            raise config_error(f"invalid label name {name!r} (must match [a-zA-Z_][a-zA-Z0-9_]*)", name)
        if name.startswith("__"):
            raise config_error(f"label name {name!r} is reserved (names starting with __ are internal)", name)
        if name in _COLLECTOR_LABELS:
            raise config_error(
                f"label {name!r} is set by the collector (job from job_name, instance from the target address)", name
            )
    return labels


def _check_address(target: str) -> str | None:
    """What is wrong with a ``host:port`` target, or None."""
    if "://" in target or "/" in target:
        return "a target is host:port, without scheme or path (set scheme and path_prefix in the job)"
    host, sep, port = target.rpartition(":")
    if not sep:
        return "a target is host:port; the port is missing"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"port must be 1..65535, got {port!r}"
    if host.startswith("["):
        if not host.endswith("]"):
            return "an IPv6 host is written in brackets, e.g. [::1]:6060"
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host[1:-1]!r} is not an IPv6 address"
    elif not host:
        return "the host is empty"
    elif ":" in host:
        return "an IPv6 host is written in brackets, e.g. [::1]:6060"
    elif any(c.isspace() or c in "@?#[]" for c in host):
        return f"{host!r} is not a host name or address"
    return None


class TargetGroup(_Strict):
    """Targets sharing labels: a static_configs entry, or one group of a file_sd file (Prometheus's format)."""

    # Label values written as YAML numbers (`version: 2`) are meant as strings.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    targets: list[str] = Field(default_factory=list, description="host:port addresses; IPv6 as [::1]:6060.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to every series of these targets.")

    @field_validator("targets")
    @classmethod
    def _targets(cls, targets: list[str]) -> list[str]:
        for i, target in enumerate(targets):
            problem = _check_address(target)
            if problem:
                raise config_error(f"invalid target {target!r}: {problem}", i)
        return targets

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_label_names(labels)


class FileSDConfig(_Strict):
    files: list[str] = Field(min_length=1, description="Files or globs, relative to the config file's directory.")
    refresh_interval: Duration = Field(DEFAULT_REFRESH_INTERVAL_S, description="How often the files are re-read.")

    @field_validator("files")
    @classmethod
    def _files(cls, files: list[str]) -> list[str]:
        for i, pattern in enumerate(files):
            if not pattern.endswith(_SD_EXTENSIONS):
                raise config_error(
                    f"file {pattern!r} must end in .json, .yml or .yaml (the extension chooses the format)", i
                )
        return files


class SampleType(_Strict):
    type: str
    unit: str


def _check_path(path: str, what: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{what} must start with '/', got {path!r}")
    if "?" in path or "#" in path:
        raise ValueError(f"{what} must not carry a query string (the collector adds ?seconds=), got {path!r}")
    return path


class PprofConfig(_Strict):
    """One pprof endpoint as the user wrote it; unset fields come from the default of that name."""

    enabled: bool | None = None
    path: str | None = None
    delta: bool | None = Field(
        None,
        description="The endpoint returns a delta itself (over ?seconds=S when seconds is set); "
        "the collector then never deltas it again.",
    )
    seconds: int | None = Field(None, gt=0, description="Profile over ?seconds=S; only with delta.")
    keep_sample_types: list[SampleType] | None = Field(None, description="Drop other sample types after scraping.")
    scrape_interval: Duration | None = Field(None, description="This endpoint's interval; default the job's.")

    @field_validator("path")
    @classmethod
    def _path(cls, path: str | None) -> str | None:
        return None if path is None else _check_path(path, "path")


class ProfilingConfig(_Strict):
    path_prefix: str = Field("", description="Prepended to every path, e.g. /internal.")
    pprof_config: dict[str, PprofConfig] = Field(default_factory=dict)

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        return _check_path(prefix, "path_prefix").rstrip("/") if prefix else ""

    @field_validator("pprof_config")
    @classmethod
    def _names(cls, entries: dict[str, PprofConfig]) -> dict[str, PprofConfig]:
        for name in entries:
            if not _LABEL_NAME.fullmatch(name):
                # The name becomes the first part of the profile type, `name:sample_type:unit:...`.
                raise config_error(f"invalid profile name {name!r} (must match [a-zA-Z_][a-zA-Z0-9_]*)", name)
        return entries


@dataclass(frozen=True, slots=True)
class _Default:
    path: str
    enabled: bool
    delta: bool = False
    timed: bool = False  # takes ?seconds=, by default the interval minus 1s


DEFAULT_PPROF: Final[dict[str, _Default]] = {
    "process_cpu": _Default("/debug/pprof/profile", enabled=True, delta=True, timed=True),
    "memory": _Default("/debug/pprof/allocs", enabled=True),
    "goroutine": _Default("/debug/pprof/goroutine", enabled=True),
    "block": _Default("/debug/pprof/block", enabled=True),
    "mutex": _Default("/debug/pprof/mutex", enabled=True),
    "threadcreate": _Default("/debug/pprof/threadcreate", enabled=False),
    "fgprof": _Default("/debug/fgprof", enabled=False, delta=True, timed=True),
    "godeltaprof_memory": _Default("/debug/pprof/delta_heap", enabled=False, delta=True),
    "godeltaprof_mutex": _Default("/debug/pprof/delta_mutex", enabled=False, delta=True),
    "godeltaprof_block": _Default("/debug/pprof/delta_block", enabled=False, delta=True),
}


@dataclass(frozen=True, slots=True)
class ProfileEndpoint:
    """One pprof endpoint of a job with every default applied."""

    name: str
    enabled: bool
    path: str  # without the job's path_prefix
    delta: bool
    seconds: int | None
    keep_sample_types: tuple[tuple[str, str], ...] | None
    interval_s: float
    # A timed profile answers only after `seconds`, so its request may take that long plus the usual timeout.
    timeout_s: float


class ScrapeConfig(_Strict):
    job_name: str = Field(min_length=1, description="Unique across scrape_configs; the `job` label.")
    tenant: str = Field(DEFAULT_TENANT, description="The tenant whose data the job's profiles are.")
    scrape_interval: Duration = Field(DEFAULT_SCRAPE_INTERVAL_S, description="How often each endpoint is scraped.")
    scrape_timeout: Duration = Field(
        DEFAULT_SCRAPE_TIMEOUT_S, description="HTTP timeout; at most scrape_interval (default 10s or the interval)."
    )
    scheme: str = Field("http", description="http or https.")
    static_configs: list[TargetGroup] = Field(default_factory=list)
    file_sd_configs: list[FileSDConfig] = Field(default_factory=list)
    profiling_config: ProfilingConfig = Field(default_factory=ProfilingConfig)

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, tenant: str) -> str:
        try:
            return check_tenant(tenant)
        except InvalidRequest as exc:
            raise ValueError(str(exc)) from None

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, scheme: str) -> str:
        if scheme not in ("http", "https"):
            raise ValueError(f"unknown scheme {scheme!r}; use http or https")
        return scheme

    @model_validator(mode="after")
    def _consistent(self) -> ScrapeConfig:
        if "scrape_timeout" not in self.model_fields_set:
            self.scrape_timeout = min(self.scrape_timeout, self.scrape_interval)
        elif self.scrape_timeout > self.scrape_interval:
            raise config_error(
                f"scrape_timeout {format_duration(self.scrape_timeout)} must not exceed "
                f"scrape_interval {format_duration(self.scrape_interval)}",
                "scrape_timeout",
            )
        _resolve(self)
        return self

    @property
    def endpoints(self) -> dict[str, ProfileEndpoint]:
        """Every endpoint of this job, enabled or not: the defaults in their order, then the custom ones."""
        return _resolve(self)


def _resolve(cfg: ScrapeConfig) -> dict[str, ProfileEndpoint]:
    given = cfg.profiling_config.pprof_config
    out: dict[str, ProfileEndpoint] = {}
    for name in [*DEFAULT_PPROF, *(n for n in given if n not in DEFAULT_PPROF)]:
        default, user = DEFAULT_PPROF.get(name), given.get(name, PprofConfig())
        at = ("profiling_config", "pprof_config", name)
        if default is None and user.path is None:
            raise config_error(f"custom profile {name!r} needs a path, e.g. path: /debug/pprof/{name}", *at)
        path = user.path if user.path is not None else default.path if default else ""
        # A custom endpoint written into the config is meant to be scraped unless it says otherwise.
        enabled = user.enabled if user.enabled is not None else default.enabled if default else True
        delta = user.delta if user.delta is not None else default.delta if default else False
        own_interval = user.scrape_interval is not None
        interval = user.scrape_interval if user.scrape_interval is not None else cfg.scrape_interval
        if user.seconds is not None and not delta:
            raise config_error(
                f"seconds is only used with delta: true (the endpoint returns a delta over ?seconds={user.seconds})",
                *at,
                "seconds",
            )
        seconds = user.seconds
        if seconds is None and default is not None and default.timed and delta:
            seconds = max(1, math.floor(interval - 1))
        if enabled and seconds is not None:
            if interval < MIN_TIMED_INTERVAL_S:
                raise config_error(
                    f"scrape_interval {format_duration(interval)} is too short for {name}, which profiles over "
                    f"?seconds=S with S < interval; use at least {format_duration(MIN_TIMED_INTERVAL_S)}",
                    *((*at, "scrape_interval") if own_interval else ("scrape_interval",)),
                )
            if seconds >= interval:
                raise config_error(
                    f"seconds {seconds} must be less than the scrape interval {format_duration(interval)}, "
                    "so that each profile ends before the next one starts",
                    *at,
                    "seconds",
                )
        keep = user.keep_sample_types
        out[name] = ProfileEndpoint(
            name=name,
            enabled=enabled,
            path=path,
            delta=delta,
            seconds=seconds,
            keep_sample_types=None if keep is None else tuple((k.type, k.unit) for k in keep),
            interval_s=interval,
            timeout_s=min(cfg.scrape_timeout, interval) + (seconds or 0),
        )
    return out
