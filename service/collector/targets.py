"""From scrape configs to scrape targets: one :class:`TargetSpec` per target x enabled pprof endpoint.

Targets come from ``static_configs`` and from ``file_sd_configs`` files in Prometheus's file_sd
format (a JSON or YAML list of ``{targets: [...], labels: {...}}``). Reading the files
(:func:`read_file_sd`) is separate from expanding (:func:`expand`), so the caller decides when to
re-read (refresh interval, file changes) and can keep a file's last good groups while it is broken.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from service.config import located_errors, parse_yaml, read_text
from service.errors import InvalidRequest
from service.scrape_config import FileSDConfig, ScrapeConfig, TargetGroup
from service.types import DEFAULT_TENANT

__all__ = ["TargetGroup", "TargetSpec", "expand", "file_sd_matches", "file_sd_paths", "read_file_sd"]

log = logging.getLogger(__name__)

_GROUPS = TypeAdapter(list[TargetGroup])
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One endpoint of one target: what to fetch, how often, and the labels its series get."""

    job: str
    instance: str  # host:port
    profile: str  # pprof_config name: process_cpu, memory, goroutine, ... or a custom one
    url: str  # scheme://host:port + path_prefix + path, no query string
    params: dict[str, str]  # {"seconds": "14"} for endpoints that profile over a window, else {}
    delta: bool  # the endpoint returns deltas itself
    interval_s: float
    timeout_s: float
    labels: dict[str, str]  # service_name, job, instance and the target's labels
    keep_sample_types: tuple[tuple[str, str], ...] | None
    tenant: str = DEFAULT_TENANT  # whose data the scrapes are (the job's tenant)

    @property
    def key(self) -> str:
        """Stable identity across reloads, for health and delta baselines (no part contains '/' but the job)."""
        return f"{self.job}/{self.instance}/{self.profile}"

    @property
    def owner_key(self) -> str:
        """What a lake's nodes share out (``collector/ownership.py``): the target, all its profile types
        together, so that one node holds its kept-alive connection and scrapes every type of it."""
        return f"{self.job}/{self.instance}"


def file_sd_paths(cfg: FileSDConfig, base_dir: Path) -> list[str]:
    """The files ``cfg`` names now, sorted: its globs matched against the file system from ``base_dir``."""
    found: set[str] = set()
    for pattern in _patterns(cfg, base_dir):
        found.update(p for p in glob.glob(pattern) if Path(p).is_file())
    return sorted(found)


def file_sd_matches(cfg: FileSDConfig, base_dir: Path, path: str) -> bool:
    """Whether ``path`` (as :func:`file_sd_paths` returns it) is one of ``cfg``'s files."""
    return any(PurePath(path).match(pattern) for pattern in _patterns(cfg, base_dir))


def read_file_sd(cfg: FileSDConfig, base_dir: Path) -> tuple[dict[str, list[TargetGroup]], list[str]]:
    """The target groups of each file ``cfg`` names, and what is wrong with those that could not be used.

    A broken file is reported and left out; the others are still read. A file named without a glob
    that does not exist is reported too (a glob that matches nothing is not: files come and go).
    """
    groups: dict[str, list[TargetGroup]] = {}
    errors: list[str] = []
    for pattern in _patterns(cfg, base_dir):
        if not _GLOB_CHARS.intersection(pattern) and not Path(pattern).is_file():
            errors.append(f"{pattern}: no such file")
    for path in file_sd_paths(cfg, base_dir):
        try:
            groups[path] = _read_groups(Path(path))
        except InvalidRequest as exc:
            errors.append(str(exc))
    return groups, errors


def expand(
    configs: Sequence[ScrapeConfig],
    base_dir: Path,
    file_groups: Mapping[str, list[TargetGroup]] | None = None,
) -> list[TargetSpec]:
    """Every target x enabled endpoint, in config order: jobs, then targets, then endpoints.

    ``file_groups`` holds the groups read per file (:func:`read_file_sd`); each job takes those of the
    files its ``file_sd_configs`` name. Without it, the files are read now and broken ones are logged
    and skipped. A target listed twice in a job is scraped once with the labels of its first
    listing; static targets come before file_sd ones, files in path order.
    """
    specs: list[TargetSpec] = []
    for cfg in configs:
        groups = list(cfg.static_configs)
        for sd in cfg.file_sd_configs:
            if file_groups is None:
                found, errors = read_file_sd(sd, base_dir)
                for error in errors:
                    log.warning("job %s: file_sd: %s", cfg.job_name, error)
            else:
                found = {p: g for p, g in file_groups.items() if file_sd_matches(sd, base_dir, p)}
            for path in sorted(found):
                groups.extend(found[path])
        targets: dict[str, dict[str, str]] = {}
        for group in groups:
            for target in group.targets:
                targets.setdefault(target, group.labels)
        endpoints = [e for e in cfg.endpoints.values() if e.enabled]
        prefix = cfg.profiling_config.path_prefix
        for instance, target_labels in targets.items():
            labels = {"service_name": cfg.job_name, **target_labels, "job": cfg.job_name, "instance": instance}
            for e in endpoints:
                specs.append(
                    TargetSpec(
                        job=cfg.job_name,
                        instance=instance,
                        profile=e.name,
                        url=f"{cfg.scheme}://{instance}{prefix}{e.path}",
                        params={} if e.seconds is None else {"seconds": str(e.seconds)},
                        delta=e.delta,
                        interval_s=e.interval_s,
                        timeout_s=e.timeout_s,
                        labels=dict(sorted(labels.items())),
                        keep_sample_types=e.keep_sample_types,
                        tenant=cfg.tenant,
                    )
                )
    return specs


def _patterns(cfg: FileSDConfig, base_dir: Path) -> list[str]:
    # Absolute, so that file_sd_matches compares whole paths and keys do not depend on the cwd.
    return [str(base_dir.absolute() / pattern) for pattern in cfg.files]


def _read_groups(path: Path) -> list[TargetGroup]:
    text = read_text(path)
    data: Any
    root: yaml.Node | None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        try:  # JSON parses as YAML too; the node tree only serves line numbers.
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            root = None
    else:
        data, root = parse_yaml(text, path)
    if data is None and path.suffix != ".json":
        return []  # an empty YAML file lists no groups
    if not isinstance(data, list):
        line = f":{root.start_mark.line + 1}" if root is not None else ""
        raise InvalidRequest(
            f"{path}{line}: expected a list of target groups ({{targets: [...], labels: {{...}}}}), "
            f"got {type(data).__name__}"
        )
    try:
        return _GROUPS.validate_python(data)
    except ValidationError as exc:
        raise InvalidRequest("\n".join(located_errors(exc, path, root))) from None
