"""scrape_configs: defaults, overrides, custom endpoints, and errors that name file, line, path and value."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from service.config import load_settings
from service.errors import InvalidRequest
from service.scrape_config import ProfileEndpoint, ScrapeConfig, format_duration, parse_duration


def _jobs(tmp_path: Path, text: str) -> list[ScrapeConfig]:
    cfg = tmp_path / "profstore.yaml"
    cfg.write_text(dedent(text))
    return load_settings(cfg).scrape_configs


def _error(tmp_path: Path, text: str) -> tuple[Path, str]:
    cfg = tmp_path / "profstore.yaml"
    cfg.write_text(dedent(text))
    with pytest.raises(InvalidRequest) as exc:
        load_settings(cfg)
    return cfg, str(exc.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("500ms", 0.5), ("15s", 15.0), ("1m", 60.0), ("1h30m", 5400.0), ("1d2h", 93600.0), ("1w", 604800.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["15x", "", "1.5s", "15", "s", "30s1m", "-1s", " 15s", 15])
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError) as exc:
        parse_duration(text)
    assert str(exc.value) == f"invalid duration {text!r} (use e.g. 500ms, 15s, 1m, 1h30m)"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.5, "500ms"), (15, "15s"), (5400, "1h30m"), (61.25, "1m1s250ms")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_defaults(tmp_path: Path) -> None:
    (job,) = _jobs(
        tmp_path,
        """
        scrape_configs:
          - job_name: demo
        """,
    )
    assert (job.scrape_interval, job.scrape_timeout, job.scheme) == (15.0, 10.0, "http")
    assert job.static_configs == job.file_sd_configs == []
    assert job.profiling_config.path_prefix == ""
    eps = job.endpoints
    enabled = {n: e.path for n, e in eps.items() if e.enabled}
    assert enabled == {
        "process_cpu": "/debug/pprof/profile",
        "memory": "/debug/pprof/allocs",
        "goroutine": "/debug/pprof/goroutine",
        "block": "/debug/pprof/block",
        "mutex": "/debug/pprof/mutex",
    }
    disabled = {n: (e.path, e.delta, e.seconds) for n, e in eps.items() if not e.enabled}
    assert disabled == {
        "threadcreate": ("/debug/pprof/threadcreate", False, None),
        "fgprof": ("/debug/fgprof", True, 14),
        "godeltaprof_memory": ("/debug/pprof/delta_heap", True, None),
        "godeltaprof_mutex": ("/debug/pprof/delta_mutex", True, None),
        "godeltaprof_block": ("/debug/pprof/delta_block", True, None),
    }
    # CPU profiles 14 of every 15 seconds; its request may take those 14 s plus the 10 s timeout.
    assert eps["process_cpu"] == ProfileEndpoint(
        "process_cpu", True, "/debug/pprof/profile", True, 14, None, 15.0, 24.0
    )
    assert eps["memory"] == ProfileEndpoint("memory", True, "/debug/pprof/allocs", False, None, None, 15.0, 10.0)


@pytest.mark.parametrize(
    ("interval", "timeout", "seconds"),
    [("2s", 2.0, 1), ("2500ms", 2.5, 1), ("5s", 5.0, 4), ("15s", 10.0, 14), ("1m", 10.0, 59), ("90500ms", 10.0, 89)],
)
def test_cpu_seconds_and_default_timeout_follow_the_interval(
    tmp_path: Path, interval: str, timeout: float, seconds: int
) -> None:
    (job,) = _jobs(tmp_path, f"scrape_configs: [{{job_name: j, scrape_interval: {interval}}}]\n")
    assert job.scrape_timeout == timeout  # 10s unless the interval is shorter
    cpu = job.endpoints["process_cpu"]
    assert (cpu.seconds, cpu.timeout_s) == (seconds, seconds + timeout)


def test_overrides_change_only_the_given_fields(tmp_path: Path) -> None:
    (job,) = _jobs(
        tmp_path,
        """
        scrape_configs:
          - job_name: demo
            scrape_interval: 30s
            scrape_timeout: 5s
            scheme: https
            profiling_config:
              pprof_config:
                mutex: {enabled: false}
                memory: {path: /debug/pprof/heap, keep_sample_types: [{type: inuse_space, unit: bytes}]}
                process_cpu: {seconds: 10}
                fgprof: {enabled: true, scrape_interval: 1m}
                goroutine: {scrape_interval: 1h}
                godeltaprof_memory: {enabled: true}
        """,
    )
    eps = job.endpoints
    assert (job.scrape_timeout, job.scheme) == (5.0, "https")
    assert eps["mutex"] == ProfileEndpoint("mutex", False, "/debug/pprof/mutex", False, None, None, 30.0, 5.0)
    assert eps["memory"] == ProfileEndpoint(
        "memory", True, "/debug/pprof/heap", False, None, (("inuse_space", "bytes"),), 30.0, 5.0
    )
    assert eps["process_cpu"] == ProfileEndpoint(
        "process_cpu", True, "/debug/pprof/profile", True, 10, None, 30.0, 15.0
    )
    # fgprof's default seconds follow its own interval, not the job's.
    assert eps["fgprof"] == ProfileEndpoint("fgprof", True, "/debug/fgprof", True, 59, None, 60.0, 64.0)
    assert eps["goroutine"].interval_s == 3600.0
    assert eps["godeltaprof_memory"] == ProfileEndpoint(
        "godeltaprof_memory", True, "/debug/pprof/delta_heap", True, None, None, 30.0, 5.0
    )
    assert list(eps)[:5] == ["process_cpu", "memory", "goroutine", "block", "mutex"]


def test_custom_endpoints(tmp_path: Path) -> None:
    (job,) = _jobs(
        tmp_path,
        """
        scrape_configs:
          - job_name: demo
            scrape_interval: 10s
            profiling_config:
              path_prefix: /internal/
              pprof_config:
                zz_custom: {path: /debug/pprof/custom, keep_sample_types: [{type: inuse_space, unit: bytes}],
                            scrape_interval: 1m}
                wall: {path: /debug/wall, delta: true, seconds: 5}
                spare: {path: /spare, enabled: false}
                snapshot: {path: /snap, delta: true}
        """,
    )
    eps = job.endpoints
    assert list(eps)[-4:] == ["zz_custom", "wall", "spare", "snapshot"]  # after the defaults, as written
    assert eps["zz_custom"] == ProfileEndpoint(
        "zz_custom", True, "/debug/pprof/custom", False, None, (("inuse_space", "bytes"),), 60.0, 10.0
    )
    assert eps["wall"] == ProfileEndpoint("wall", True, "/debug/wall", True, 5, None, 10.0, 15.0)
    assert not eps["spare"].enabled
    # A custom delta endpoint without seconds returns deltas on its own (godeltaprof-like): no ?seconds=.
    assert (eps["snapshot"].delta, eps["snapshot"].seconds) == (True, None)
    assert job.profiling_config.path_prefix == "/internal"  # so prefix + path has one slash


def test_entry_interval_shorter_than_the_timeout_uses_it_as_timeout(tmp_path: Path) -> None:
    (job,) = _jobs(
        tmp_path,
        "scrape_configs: [{job_name: j, profiling_config: {pprof_config: {goroutine: {scrape_interval: 3s}}}}]\n",
    )
    assert (job.endpoints["goroutine"].interval_s, job.endpoints["goroutine"].timeout_s) == (3.0, 3.0)


def test_null_collections_are_empty(tmp_path: Path) -> None:
    (job,) = _jobs(
        tmp_path,
        """
        scrape_configs:
          - job_name: demo
            static_configs:
            profiling_config:
              pprof_config:
        """,
    )
    assert job.static_configs == []
    assert len([e for e in job.endpoints.values() if e.enabled]) == 5


def test_dump_validates_again(tmp_path: Path) -> None:
    (job,) = _jobs(
        tmp_path,
        """
        scrape_configs:
          - job_name: demo
            scrape_interval: 1h30m
            static_configs: [{targets: ["a:1"], labels: {env: dev}}]
            file_sd_configs: [{files: [t.json], refresh_interval: 500ms}]
            profiling_config: {pprof_config: {fgprof: {enabled: true, scrape_interval: 2m}}}
        """,
    )
    dumped = job.model_dump(mode="json")
    assert dumped["scrape_interval"] == "1h30m"
    assert dumped["file_sd_configs"] == [{"files": ["t.json"], "refresh_interval": "500ms"}]
    again = ScrapeConfig.model_validate(dumped)
    assert again == job
    assert again.endpoints == job.endpoints


HINT = "(use e.g. 500ms, 15s, 1m, 1h30m)"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                scrape_interval: 15x
            """,
            3,
            f"scrape_configs[0].scrape_interval: invalid duration '15x' {HINT}",
            id="bad-duration",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                scrape_timeout: 15
            """,
            3,
            f"scrape_configs[0].scrape_timeout: invalid duration 15 {HINT}",
            id="duration-without-unit",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                scrape_interval: 0s
            """,
            3,
            "scrape_configs[0].scrape_interval: duration must be positive, got '0s'",
            id="zero-interval",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                file_sd_configs:
                  - files: [a.json]
                    refresh_interval: 1x
            """,
            5,
            f"scrape_configs[0].file_sd_configs[0].refresh_interval: invalid duration '1x' {HINT}",
            id="bad-refresh",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                scrape_interval: 15s
                scrape_timeout: 20s
            """,
            4,
            "scrape_configs[0].scrape_timeout: scrape_timeout 20s must not exceed scrape_interval 15s",
            id="timeout-over-interval",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  pprof_config:
                    process_cpu:
                      seconds: 15
            """,
            6,
            "scrape_configs[0].profiling_config.pprof_config.process_cpu.seconds: seconds 15 must be less than "
            "the scrape interval 15s, so that each profile ends before the next one starts",
            id="seconds-equal-interval",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  pprof_config:
                    wall: {path: /wall, delta: true, seconds: 30, scrape_interval: 20s}
            """,
            5,
            "scrape_configs[0].profiling_config.pprof_config.wall.seconds: seconds 30 must be less than "
            "the scrape interval 20s, so that each profile ends before the next one starts",
            id="seconds-over-entry-interval",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                scrape_interval: 1s
            """,
            3,
            "scrape_configs[0].scrape_interval: scrape_interval 1s is too short for process_cpu, which profiles "
            "over ?seconds=S with S < interval; use at least 2s",
            id="interval-too-short-for-cpu",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  pprof_config:
                    fgprof:
                      enabled: true
                      scrape_interval: 1500ms
            """,
            7,
            "scrape_configs[0].profiling_config.pprof_config.fgprof.scrape_interval: scrape_interval 1s500ms is too "
            "short for fgprof, which profiles over ?seconds=S with S < interval; use at least 2s",
            id="entry-interval-too-short",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  pprof_config:
                    memory: {seconds: 5}
            """,
            5,
            "scrape_configs[0].profiling_config.pprof_config.memory.seconds: seconds is only used with delta: true "
            "(the endpoint returns a delta over ?seconds=5)",
            id="seconds-without-delta",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: one
              - job_name: two
              - job_name: one
            """,
            4,
            "scrape_configs[2].job_name: duplicate job_name 'one'; scrape_configs[0] already uses it",
            id="duplicate-job",
        ),
        pytest.param(
            """\
            scrape_configs:
              - scrape_interval: 15s
            """,
            2,
            "scrape_configs[0].job_name: Field required",
            id="missing-job-name",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                scheme: ftp
            """,
            3,
            "scrape_configs[0].scheme: unknown scheme 'ftp'; use http or https",
            id="scheme",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                static_configs:
                  - targets:
                      - 127.0.0.1:6060
                      - 127.0.0.1
            """,
            6,
            "scrape_configs[0].static_configs[0].targets[1]: invalid target '127.0.0.1': "
            "a target is host:port; the port is missing",
            id="target-without-port",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                static_configs:
                  - targets: ["a:1", "b:1", "host:70000"]
            """,
            4,
            "scrape_configs[0].static_configs[0].targets[2]: invalid target 'host:70000': port must be 1..65535, "
            "got '70000'",
            id="port-range",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                static_configs: [{targets: ["a:1"]}, {targets: [":6060"]}]
            """,
            3,
            "scrape_configs[0].static_configs[1].targets[0]: invalid target ':6060': the host is empty",
            id="empty-host",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                static_configs: [{targets: ["::1:6060"]}]
            """,
            3,
            "scrape_configs[0].static_configs[0].targets[0]: invalid target '::1:6060': an IPv6 host is written "
            "in brackets, e.g. [::1]:6060",
            id="ipv6-without-brackets",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                static_configs: [{targets: ["[zz::1]:6060"]}]
            """,
            3,
            "scrape_configs[0].static_configs[0].targets[0]: invalid target '[zz::1]:6060': 'zz::1' is not an "
            "IPv6 address",
            id="bad-ipv6",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                static_configs: [{targets: ["http://a:6060"]}]
            """,
            3,
            "scrape_configs[0].static_configs[0].targets[0]: invalid target 'http://a:6060': a target is host:port, "
            "without scheme or path (set scheme and path_prefix in the job)",
            id="target-with-scheme",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  pprof_config:
                    custom: {enabled: true}
            """,
            5,
            "scrape_configs[0].profiling_config.pprof_config.custom: custom profile 'custom' needs a path, "
            "e.g. path: /debug/pprof/custom",
            id="custom-without-path",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  pprof_config:
                    memory:
                      enabled: true
                      path: debug/pprof/heap
            """,
            7,
            "scrape_configs[0].profiling_config.pprof_config.memory.path: path must start with '/', "
            "got 'debug/pprof/heap'",
            id="relative-path",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  pprof_config:
                    memory: {path: "/debug/pprof/heap?gc=1"}
            """,
            5,
            "scrape_configs[0].profiling_config.pprof_config.memory.path: path must not carry a query string "
            "(the collector adds ?seconds=), got '/debug/pprof/heap?gc=1'",
            id="path-with-query",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  path_prefix: internal
            """,
            4,
            "scrape_configs[0].profiling_config.path_prefix: path_prefix must start with '/', got 'internal'",
            id="relative-prefix",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  pprof_config:
                    my-endpoint: {path: /x}
            """,
            5,
            "scrape_configs[0].profiling_config.pprof_config.my-endpoint: invalid profile name 'my-endpoint' "
            "(must match [a-zA-Z_][a-zA-Z0-9_]*)",
            id="profile-name",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                scrape_intervall: 15s
            """,
            3,
            "scrape_configs[0].scrape_intervall: unknown key 'scrape_intervall'; allowed here: job_name, tenant, "
            "scrape_interval, scrape_timeout, scheme, static_configs, file_sd_configs, profiling_config",
            id="unknown-job-key",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                static_configs:
                  - targets: ["a:1"]
                    label: {env: dev}
            """,
            5,
            "scrape_configs[0].static_configs[0].label: unknown key 'label'; allowed here: targets, labels",
            id="unknown-static-key",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                file_sd_configs:
                  - files: [a.json]
                    refresh: 1m
            """,
            5,
            "scrape_configs[0].file_sd_configs[0].refresh: unknown key 'refresh'; allowed here: files, "
            "refresh_interval",
            id="unknown-file-sd-key",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  prefix: /x
            """,
            4,
            "scrape_configs[0].profiling_config.prefix: unknown key 'prefix'; allowed here: path_prefix, pprof_config",
            id="unknown-profiling-key",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  pprof_config:
                    memory:
                      path: /debug/pprof/heap
                      keep_sample_type: [{type: inuse_space, unit: bytes}]
            """,
            7,
            "scrape_configs[0].profiling_config.pprof_config.memory.keep_sample_type: unknown key "
            "'keep_sample_type'; allowed here: enabled, path, delta, seconds, keep_sample_types, scrape_interval",
            id="unknown-pprof-key",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                profiling_config:
                  pprof_config:
                    memory:
                      keep_sample_types:
                        - {type: inuse_space, units: bytes}
            """,
            7,
            "scrape_configs[0].profiling_config.pprof_config.memory.keep_sample_types[0].units: unknown key "
            "'units'; allowed here: type, unit",
            id="unknown-sample-type-key",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                file_sd_configs:
                  - files: [targets/*]
            """,
            4,
            "scrape_configs[0].file_sd_configs[0].files[0]: file 'targets/*' must end in .json, .yml or .yaml "
            "(the extension chooses the format)",
            id="file-sd-extension",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                static_configs:
                  - targets: ["a:1"]
                    labels:
                      env: dev
                      app-name: x
            """,
            7,
            "scrape_configs[0].static_configs[0].labels.app-name: invalid label name 'app-name' "
            "(must match [a-zA-Z_][a-zA-Z0-9_]*)",
            id="label-name",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                static_configs:
                  - targets: ["a:1"]
                    labels: {__name__: x}
            """,
            5,
            "scrape_configs[0].static_configs[0].labels.__name__: label name '__name__' is reserved "
            "(names starting with __ are internal)",
            id="reserved-label",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                static_configs:
                  - targets: ["a:1"]
                    labels:
                      instance: x
            """,
            6,
            "scrape_configs[0].static_configs[0].labels.instance: label 'instance' is set by the collector "
            "(job from job_name, instance from the target address)",
            id="collector-label",
        ),
        pytest.param(
            """\
            scrape_configs:
              - job_name: demo
                static_configs:
                  - targets: ["a:1"]
                    labels: {enabled: true}
            """,
            5,
            "scrape_configs[0].static_configs[0].labels.enabled: Input should be a valid string (got True)",
            id="boolean-label-value",
        ),
    ],
)
def test_errors_name_file_line_path_and_value(tmp_path: Path, text: str, line: int, message: str) -> None:
    cfg, error = _error(tmp_path, text)
    assert error == f"{cfg}:{line}: {message}"


def test_every_error_is_reported_one_per_line(tmp_path: Path) -> None:
    cfg, error = _error(
        tmp_path,
        """\
        listen: 127.0.0.1:4040
        scrape_configs:
          - job_name: a
            scrape_interval: 15x
          - job_name: b
            static_configs: [{targets: ["nohost"]}]
        """,
    )
    assert error.splitlines() == [
        f"{cfg}:4: scrape_configs[0].scrape_interval: invalid duration '15x' {HINT}",
        f"{cfg}:6: scrape_configs[1].static_configs[0].targets[0]: invalid target 'nohost': "
        "a target is host:port; the port is missing",
    ]
