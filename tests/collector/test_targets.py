"""Target expansion and file_sd: real config files and target files in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

import pytest

from service.collector.targets import TargetGroup, TargetSpec, expand, file_sd_matches, file_sd_paths, read_file_sd
from service.config import load_settings
from service.scrape_config import FileSDConfig, ScrapeConfig


def _configs(tmp_path: Path, text: str) -> list[ScrapeConfig]:
    cfg = tmp_path / "profstore.yaml"
    cfg.write_text(dedent(text))
    return load_settings(cfg).scrape_configs


def test_default_endpoints_of_one_target(tmp_path: Path) -> None:
    configs = _configs(
        tmp_path,
        """
        scrape_configs:
          - job_name: demo
            static_configs: [{targets: ["127.0.0.1:6060"]}]
        """,
    )
    labels = {"service_name": "demo", "job": "demo", "instance": "127.0.0.1:6060"}
    base = "http://127.0.0.1:6060/debug/pprof"
    assert expand(configs, tmp_path) == [
        TargetSpec(
            "demo",
            "127.0.0.1:6060",
            "process_cpu",
            f"{base}/profile",
            {"seconds": "14"},
            True,
            15.0,
            24.0,
            labels,
            None,
        ),
        TargetSpec("demo", "127.0.0.1:6060", "memory", f"{base}/allocs", {}, False, 15.0, 10.0, labels, None),
        TargetSpec("demo", "127.0.0.1:6060", "goroutine", f"{base}/goroutine", {}, False, 15.0, 10.0, labels, None),
        TargetSpec("demo", "127.0.0.1:6060", "block", f"{base}/block", {}, False, 15.0, 10.0, labels, None),
        TargetSpec("demo", "127.0.0.1:6060", "mutex", f"{base}/mutex", {}, False, 15.0, 10.0, labels, None),
    ]
    assert expand(configs, tmp_path)[0].key == "demo/127.0.0.1:6060/process_cpu"


def test_overrides_prefix_scheme_and_labels(tmp_path: Path) -> None:
    configs = _configs(
        tmp_path,
        """
        scrape_configs:
          - job_name: shop
            scheme: https
            scrape_interval: 30s
            scrape_timeout: 5s
            static_configs:
              - targets: ["[::1]:6060"]
                labels: {service_name: checkout, env: prod, version: 2}
              - targets: ["10.0.0.2:6060"]
            profiling_config:
              path_prefix: /internal
              pprof_config:
                process_cpu: {enabled: false}
                block: {enabled: false}
                mutex: {enabled: false}
                goroutine: {enabled: false}
                memory: {keep_sample_types: [{type: alloc_space, unit: bytes}]}
                fgprof: {enabled: true, scrape_interval: 1m}
                custom: {path: /debug/custom, scrape_interval: 2m}
        """,
    )
    specs = expand(configs, tmp_path)
    assert [(s.instance, s.profile) for s in specs] == [
        ("[::1]:6060", "memory"),
        ("[::1]:6060", "fgprof"),
        ("[::1]:6060", "custom"),
        ("10.0.0.2:6060", "memory"),
        ("10.0.0.2:6060", "fgprof"),
        ("10.0.0.2:6060", "custom"),
    ]
    memory, fgprof, custom = specs[:3]
    assert memory.url == "https://[::1]:6060/internal/debug/pprof/allocs"
    assert memory.keep_sample_types == (("alloc_space", "bytes"),)
    assert (memory.interval_s, memory.timeout_s) == (30.0, 5.0)
    assert (fgprof.url, fgprof.params, fgprof.delta) == (
        "https://[::1]:6060/internal/debug/fgprof",
        {"seconds": "59"},
        True,
    )
    assert (fgprof.interval_s, fgprof.timeout_s) == (60.0, 64.0)
    assert (custom.url, custom.params, custom.interval_s) == ("https://[::1]:6060/internal/debug/custom", {}, 120.0)
    # service_name comes from the target's label when it has one, else from the job name.
    assert memory.labels == {
        "service_name": "checkout",
        "env": "prod",
        "version": "2",
        "job": "shop",
        "instance": "[::1]:6060",
    }
    assert specs[3].labels == {"service_name": "shop", "job": "shop", "instance": "10.0.0.2:6060"}


def test_a_target_listed_twice_is_scraped_once_with_its_first_labels(tmp_path: Path) -> None:
    (tmp_path / "sd.json").write_text(
        json.dumps(
            [{"targets": ["b:1", "c:1"], "labels": {"from": "file"}}, {"targets": ["a:1"], "labels": {"x": "y"}}]
        )
    )
    configs = _configs(
        tmp_path,
        """
        scrape_configs:
          - job_name: j
            static_configs:
              - {targets: ["a:1", "b:1"], labels: {from: static}}
              - {targets: ["b:1"], labels: {from: second}}
            file_sd_configs: [{files: [sd.json]}]
            profiling_config: {pprof_config: {process_cpu: {enabled: false}, memory: {enabled: false},
                                              block: {enabled: false}, mutex: {enabled: false}}}
          - job_name: k
            static_configs: [{targets: ["a:1"]}]
            profiling_config: {pprof_config: {process_cpu: {enabled: false}, memory: {enabled: false},
                                              block: {enabled: false}, mutex: {enabled: false}}}
        """,
    )
    specs = expand(configs, tmp_path)
    assert [(s.key, s.labels.get("from")) for s in specs] == [
        ("j/a:1/goroutine", "static"),
        ("j/b:1/goroutine", "static"),
        ("j/c:1/goroutine", "file"),
        ("k/a:1/goroutine", None),  # another job scrapes the same target on its own
    ]
    assert expand(configs, tmp_path) == specs


def test_file_sd_json_and_yaml_globs_relative_to_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sd = tmp_path / "targets"
    sd.mkdir()
    (sd / "b.json").write_text('[{"targets": ["b:1"], "labels": {"team": "b"}}]')
    (sd / "a.json").write_text('[{"targets": ["a:1", "a:2"]}, {"targets": ["a:3"], "labels": {"zone": "z1"}}]')
    (sd / "c.yaml").write_text("- targets: [c:1]\n  labels: {team: c}\n")
    (sd / "d.yml").write_text("")  # an empty YAML file lists no groups
    (sd / "ignored.txt").write_text("not a target file")
    cfg = FileSDConfig(files=["targets/*.json", "targets/*.yaml", "targets/*.yml"])
    monkeypatch.chdir(tmp_path.parent)  # the working directory does not matter, base_dir does
    groups, errors = read_file_sd(cfg, tmp_path)
    assert errors == []
    assert groups == {
        str(sd / "a.json"): [TargetGroup(targets=["a:1", "a:2"]), TargetGroup(targets=["a:3"], labels={"zone": "z1"})],
        str(sd / "b.json"): [TargetGroup(targets=["b:1"], labels={"team": "b"})],
        str(sd / "c.yaml"): [TargetGroup(targets=["c:1"], labels={"team": "c"})],
        str(sd / "d.yml"): [],
    }
    assert file_sd_paths(cfg, tmp_path) == sorted(groups)


def test_file_sd_absolute_patterns(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text('[{"targets": ["a:1"]}]')
    groups, errors = read_file_sd(FileSDConfig(files=[str(tmp_path / "*.json")]), Path("/nonexistent"))
    assert (list(groups), errors) == ([str(tmp_path / "t.json")], [])


def test_a_bad_file_is_reported_and_the_others_load(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('[{"targets": ["a:1"]}]')
    (tmp_path / "syntax.json").write_text('[\n  {"targets": ["a:1"],}\n]')
    (tmp_path / "label.json").write_text(
        '[\n  {"targets": ["a:1"]},\n  {"targets": ["b:1"],\n   "labels": {"bad-name": "x"}}\n]'
    )
    (tmp_path / "object.json").write_text('{"targets": ["a:1"]}')
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "target.yaml").write_text("- targets:\n    - a:1\n    - nope\n")
    (tmp_path / "key.yaml").write_text("- targets: [a:1]\n  lables: {x: y}\n")
    (tmp_path / "broken.yaml").write_text("- targets: [a:1\n")
    cfg = FileSDConfig(files=["*.json", "*.yaml", "missing.yaml", "none-*.yaml"])
    groups, errors = read_file_sd(cfg, tmp_path)
    assert groups == {str(good): [TargetGroup(targets=["a:1"])]}
    t = tmp_path
    assert sorted(errors) == sorted(
        [
            f"{t / 'missing.yaml'}: no such file",  # named literally; a glob matching nothing is no error
            f"{t / 'syntax.json'}:2: invalid JSON: Expecting property name enclosed in double quotes",
            f"{t / 'label.json'}:4: [1].labels.bad-name: invalid label name 'bad-name' (must match [a-zA-Z_][a-zA-Z0-9_]*)",
            f"{t / 'object.json'}:1: expected a list of target groups ({{targets: [...], labels: {{...}}}}), got dict",
            f"{t / 'empty.json'}:1: invalid JSON: Expecting value",
            f"{t / 'target.yaml'}:3: [0].targets[1]: invalid target 'nope': a target is host:port; the port is missing",
            f"{t / 'key.yaml'}:2: [0].lables: unknown key 'lables'; allowed here: targets, labels",
            f"{t / 'broken.yaml'}:2: invalid YAML: expected ',' or ']', but got '<stream end>'",
        ]
    )


def test_a_file_that_is_not_text_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_bytes(b"\x1f\x8b\x08\x00\xff")
    groups, errors = read_file_sd(FileSDConfig(files=["t.json"]), tmp_path)
    assert (groups, errors) == ({}, [f"{f}: cannot read: not UTF-8 text (byte 0x8b at offset 1)"])


def test_file_groups_go_to_the_jobs_whose_globs_match(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "t.json").write_text('[{"targets": ["a:1"]}]')
    (tmp_path / "b" / "t.yaml").write_text("- targets: [b:1]\n")
    configs = _configs(
        tmp_path,
        """
        scrape_configs:
          - job_name: ja
            file_sd_configs: [{files: [a/*.json]}]
            profiling_config: {pprof_config: {process_cpu: {enabled: false}, memory: {enabled: false},
                                              block: {enabled: false}, mutex: {enabled: false}}}
          - job_name: jb
            file_sd_configs: [{files: [b/*.yaml]}]
            profiling_config: {pprof_config: {process_cpu: {enabled: false}, memory: {enabled: false},
                                              block: {enabled: false}, mutex: {enabled: false}}}
        """,
    )
    file_groups: dict[str, list[TargetGroup]] = {}
    for job in configs:
        for sd in job.file_sd_configs:
            file_groups.update(read_file_sd(sd, tmp_path)[0])
    assert [s.key for s in expand(configs, tmp_path, file_groups)] == ["ja/a:1/goroutine", "jb/b:1/goroutine"]
    # The caller's groups are used as given (e.g. a file's last good groups), not re-read.
    file_groups[str(tmp_path / "a" / "t.json")] = [TargetGroup(targets=["kept:1"])]
    (tmp_path / "a" / "t.json").write_text("broken")
    assert [s.key for s in expand(configs, tmp_path, file_groups)] == ["ja/kept:1/goroutine", "jb/b:1/goroutine"]
    # Without file_groups the files are read now, and the broken one is skipped.
    assert [s.key for s in expand(configs, tmp_path)] == ["jb/b:1/goroutine"]
    sd_a = configs[0].file_sd_configs[0]
    assert file_sd_matches(sd_a, tmp_path, str(tmp_path / "a" / "t.json"))
    assert not file_sd_matches(sd_a, tmp_path, str(tmp_path / "b" / "t.yaml"))
    assert not file_sd_matches(sd_a, tmp_path, str(tmp_path / "a" / "sub" / "t.json"))  # * stays in one directory


def test_a_late_cpu_scrape_shortens_its_window_to_end_in_time() -> None:
    from service.collector.jobs import within_interval

    cpu = TargetSpec("d", "h:1", "process_cpu", "http://h:1/p", {"seconds": "14"}, True, 15.0, 24.0, {}, None)
    assert within_interval(cpu, 0.3) is cpu  # within the second of slack
    assert within_interval(cpu, 0.6).params == {"seconds": "13"}
    assert within_interval(cpu, 1.4).params == {"seconds": "12"}
    assert within_interval(cpu, 20.0).params == {"seconds": "1"}
    heap = TargetSpec("d", "h:1", "memory", "http://h:1/a", {}, False, 15.0, 10.0, {}, None)
    assert within_interval(heap, 5.0) is heap
