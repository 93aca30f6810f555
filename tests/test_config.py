"""Settings: YAML, environment and flags, with errors that name the file, the line, the setting and the value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.collector.targets import expand
from service.config import Settings, load_settings
from service.errors import InvalidRequest
from tests.conftest import REPO


def test_yaml_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "profstore.yaml"
    cfg.write_text("listen: 127.0.0.1:5050\nquery_timeout_s: 5\n")
    s = load_settings(cfg, data_dir=tmp_path / "d")
    assert (s.host, s.port, s.query_timeout_s, s.data_dir) == ("127.0.0.1", 5050, 5.0, tmp_path / "d")
    assert load_settings(cfg, listen="0.0.0.0:7000").port == 7000


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFSTORE_MAX_UNCOMPRESSED_BYTES", "1000")
    assert load_settings().decode_limits.max_uncompressed_bytes == 1000


def test_environment_beats_the_file_and_flags_beat_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "profstore.yaml"
    cfg.write_text("listen: 127.0.0.1:5050\nquery_timeout_s: 5\nwrite_batch_max: 7\n")
    monkeypatch.setenv("PROFSTORE_LISTEN", "127.0.0.1:6060")
    monkeypatch.setenv("PROFSTORE_QUERY_TIMEOUT_S", "9")
    s = load_settings(cfg)
    assert (s.port, s.query_timeout_s, s.write_batch_max) == (6060, 9.0, 7)
    assert load_settings(cfg, listen="127.0.0.1:7070").port == 7070


def test_scrape_configs_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFSTORE_SCRAPE_CONFIGS", '[{"job_name": "env", "scrape_interval": "30s"}]')
    (job,) = load_settings().scrape_configs
    assert (job.job_name, job.scrape_interval) == ("env", 30.0)


def test_errors_from_flags_and_environment_name_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "profstore.yaml"
    cfg.write_text("data_dir: ./d\n")
    with pytest.raises(InvalidRequest) as exc:
        load_settings(cfg, listen="nowhere")
    assert str(exc.value) == "--listen: listen: listen must be HOST:PORT, got 'nowhere'"
    monkeypatch.setenv("PROFSTORE_WRITE_BATCH_MAX", "0")
    with pytest.raises(InvalidRequest) as exc:
        load_settings(cfg)
    assert str(exc.value) == "PROFSTORE_WRITE_BATCH_MAX: write_batch_max: Input should be greater than 0 (got '0')"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen: nowhere\n", "1: listen: listen must be HOST:PORT, got 'nowhere'"),
        ("data_dir: ./d\nquery_timeout_s: -1\n", "2: query_timeout_s: Input should be greater than 0 (got -1)"),
        (
            "data_dir: ./d\nkeep_for: 3d\n",
            "2: unknown setting(s) keep_for; known: data_dir, listen, max_compressed_bytes, max_uncompressed_bytes, "
            "query_timeout_s, max_concurrent_queries, request_body_timeout_s, write_batch_max, write_batch_linger_s, "
            "write_max_pending, ingest_workers, duckdb_memory_limit, access_log, checkpoint_idle_bytes, checkpoint_busy_bytes, compaction_interval_s, max_range_days, scrape_concurrency, "
            "scrape_max_pending_stores, max_samples, "
            "max_stack_depth, analysis, storage, auth, retention, scrape_configs",
        ),
        (
            "data_dir: ./d\nretention: {days: 0}\n",
            "2: retention.days: Input should be greater than 0 (got 0)",
        ),
        ("- a\n- b\n", "1: the config must be a mapping of settings"),
        ("listen: [a\ndata_dir: x\n", "2: invalid YAML: expected ',' or ']', but got ':'"),
        ("listen: a: b\n", "1: invalid YAML: mapping values are not allowed here"),
        (
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 15s\n    scrape_interval: 30s\n",
            "4: scrape_configs[0]: duplicate key 'scrape_interval' (first at line 3)",
        ),
        ("listen: 1.2.3.4:5\nlisten: 1.2.3.4:6\n", "2: duplicate key 'listen' (first at line 1)"),
    ],
)
def test_bad_config_names_file_line_setting_and_value(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(InvalidRequest) as exc:
        load_settings(cfg)
    assert str(exc.value) == f"{cfg}:{message}"


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as exc:
        load_settings(tmp_path / "missing.yaml")
    assert str(exc.value) == f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"


def test_empty_file_means_defaults_and_config_dir(tmp_path: Path) -> None:
    cfg = tmp_path / "etc" / "profstore.yaml"
    cfg.parent.mkdir()
    cfg.write_text("# nothing set yet\nscrape_configs:\n")
    s = load_settings(cfg)
    assert s.scrape_configs == []
    assert s.listen == "127.0.0.1:4040"
    assert s.config_dir == tmp_path / "etc"  # file_sd globs start there
    assert Settings().config_dir == Path.cwd()


def test_example_file_loads() -> None:
    s = load_settings(REPO / "profstore.example.yaml")
    assert (s.data_dir, s.listen) == (Path("./data"), "127.0.0.1:4040")
    specs = expand(s.scrape_configs, s.config_dir)
    assert [(t.job, t.instance, t.profile) for t in specs] == [
        ("demo", "127.0.0.1:6060", p) for p in ("process_cpu", "memory", "goroutine", "block", "mutex")
    ]
    assert {t.interval_s for t in specs} == {15.0}
    assert specs[0].labels == {"service_name": "demo", "job": "demo", "instance": "127.0.0.1:6060"}


def test_example_file_commented_blocks_load_when_uncommented(tmp_path: Path) -> None:
    """The commented-out file_sd_configs and profiling_config of the example are valid as shown."""
    text = (REPO / "profstore.example.yaml").read_text()
    # Uncomment the YAML lines of the job ("    # key: ..." or "    #   - ..."), not the prose.
    uncommented = re.sub(r"^    # ((?:  )*(?:[a-z_]+:|- ).*)$", r"    \1", text, flags=re.M)
    assert "    file_sd_configs:" in uncommented and "        heap_inuse:" in uncommented
    cfg = tmp_path / "profstore.yaml"
    cfg.write_text(uncommented)
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "more.json").write_text('[{"targets": ["127.0.0.1:6061"]}]')
    s = load_settings(cfg)
    specs = {t.key: t for t in expand(s.scrape_configs, s.config_dir)}
    assert "demo/127.0.0.1:6060/mutex" not in specs
    assert specs["demo/127.0.0.1:6061/fgprof"].params == {"seconds": "14"}
    heap = specs["demo/127.0.0.1:6060/heap_inuse"]
    assert (heap.url, heap.interval_s, heap.keep_sample_types) == (
        "http://127.0.0.1:6060/debug/pprof/heap",
        60.0,
        (("inuse_space", "bytes"),),
    )


def test_writer_settings_reach_the_writer(tmp_path: Path) -> None:
    """The checkpoint thresholds decide when the writer folds the WAL into the file: tiny ones after each batch.

    Both are set, since which one applies depends on whether anything waits behind the batch (the
    app's own startup tasks may).
    """
    import gzip

    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.pprof.test_decode import minimal

    body = gzip.compress(minimal().SerializeToString())
    for idle, checkpointed in ((1, True), (1 << 30, False)):
        app = create_app(
            Settings(
                data_dir=tmp_path / f"idle{idle}",
                checkpoint_idle_bytes=idle,
                checkpoint_busy_bytes=idle,
                write_batch_linger_s=0,
            )
        )
        with TestClient(app) as c:
            r = c.post("/api/v1/ingest", content=body, params={"ts": "1700000000"})
            assert r.status_code == 200, r.text
            # The checkpoint follows the acknowledgement; a task on the writer's queue runs after it.
            app.state.db.writer.call(lambda con: None).result(30)
            seen = 'profstore_ingest_stage_seconds_total{stage="checkpoint"}' in c.get("/metrics").text
            assert seen == checkpointed, idle
