"""Retention against a real DuckDB file: old data goes, shared symbols stay, nothing dangles."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import RetentionRule, RetentionSettings, Settings
from tests.api.test_connect import CPU, _cpu_profile

DAY = 86400
NOW = int(time.time())
OLD = NOW - 40 * DAY
NEW = NOW - 1 * DAY


def _app(tmp_path: Path, retention: RetentionSettings) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", retention=retention)
    settings.analysis.enabled = False
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def short(tmp_path: Path) -> Iterator[TestClient]:
    """Raw data 31 days, rollups 35: a 40-day-old profile goes entirely."""
    yield from _app(tmp_path, RetentionSettings(days=31, rollup_days=35))


def _ingest(c: TestClient, stacks: list[tuple[list[str], int]], ts: int, labels: str = '{service_name="a"}') -> None:
    r = c.post("/api/v1/ingest", params={"labels": labels, "ts": str(ts)}, content=_cpu_profile(stacks, ts * 1000))
    assert r.status_code == 200, r.text


def _names(c: TestClient, frm: int, until: int) -> dict[str, int]:
    r = c.get("/api/v1/top", params={"query": CPU + "{}", "from": str(frm), "until": str(until)})
    assert r.status_code == 200, r.text
    return {row["name"]: row["flat"] for row in r.json()["rows"] if row["flat"]}


def _rows(c: TestClient) -> dict[str, int]:
    return {t["name"]: t["rows"] for t in c.get("/api/v1/storage").json()["tables"]}


def test_expired_profiles_go_with_the_symbols_only_they_used(short: TestClient) -> None:
    _ingest(short, [(["main", "old_only"], 5), (["main", "shared"], 3)], OLD)
    _ingest(short, [(["main", "shared"], 11), (["main", "new_only"], 2)], NEW)
    before = _rows(short)
    assert _names(short, OLD - 60, OLD + 60) == {"old_only": 5, "shared": 3}

    out = short.post("/api/v1/storage/expire").json()["deleted"]
    assert out["samples"] == 2 and out["profiles"] == 1 and out["function_rollup"] >= 2
    assert out["functions"] == 1  # old_only; main and shared are used by the new profile
    after = _rows(short)
    assert after["functions"] == before["functions"] - 1
    assert after["stacks"] == before["stacks"] - 1
    # The old range is empty, the new one unchanged.
    r = short.get("/api/v1/top", params={"query": CPU + "{}", "from": str(OLD - 60), "until": str(OLD + 60)})
    assert r.status_code == 200 and r.json()["rows"] == []
    assert _names(short, NEW - 60, NEW + 60) == {"shared": 11, "new_only": 2}
    # Running again deletes nothing.
    assert not any(short.post("/api/v1/storage/expire").json()["deleted"].values())


def test_symbols_deleted_are_stored_again_when_they_come_back(short: TestClient) -> None:
    _ingest(short, [(["main", "old_only"], 5)], OLD)
    _ingest(short, [(["main", "other"], 1)], NEW)
    short.post("/api/v1/storage/expire")
    # The writer remembered old_only's stack and function as committed; retention made that false.
    _ingest(short, [(["main", "old_only"], 7)], NOW - 60)
    assert _names(short, NOW - 120, NOW) == {"old_only": 7}
    export = short.get("/api/v1/export", params={"query": CPU + "{}", "from": str(NOW - 120), "until": str(NOW)})
    assert export.status_code == 200 and len(export.content) > 0


def test_the_label_index_follows_the_series_retention_deletes(short: TestClient) -> None:
    _ingest(short, [(["main", "a"], 1)], OLD, '{service_name="gone", pod="p-old", zone="z1"}')
    _ingest(short, [(["main", "a"], 1)], NEW, '{service_name="kept", pod="p-new"}')
    assert short.get("/api/v1/labels/service_name/values").json() == ["gone", "kept"]
    assert short.get("/api/v1/labels").json() == ["pod", "service_name", "zone"]
    before = _rows(short)

    out = short.post("/api/v1/storage/expire").json()["deleted"]
    assert out["series"] == 1 and out["series_labels"] == 3  # its service_name, pod and zone
    assert out["series_label_values"] == 3  # none of its values is used by the kept series
    assert _rows(short)["series_labels"] == before["series_labels"] - 3
    assert short.get("/api/v1/labels").json() == ["pod", "service_name"]
    assert short.get("/api/v1/labels/pod/values").json() == ["p-new"]
    gone = short.get("/api/v1/series", params={"query": CPU + '{service_name="gone"}'})
    assert gone.status_code == 200 and gone.json() == []
    assert short.get("/api/v1/labels/service_name/values", params={"query": '{pod=~"p-.*"}'}).json() == ["kept"]
    # The series comes back: the writer forgot it was stored, so it is indexed again.
    _ingest(short, [(["main", "a"], 1)], NOW - 60, '{service_name="gone", pod="p-old", zone="z1"}')
    assert short.get("/api/v1/labels/service_name/values").json() == ["gone", "kept"]
    assert short.get("/api/v1/labels/zone/values", params={"query": '{service_name!="kept"}'}).json() == ["z1"]


def test_rollups_outlive_raw_samples(tmp_path: Path) -> None:
    for c in _app(tmp_path, RetentionSettings(days=31, rollup_days=400)):
        _ingest(c, [(["main", "old_only"], 5)], OLD)
        _ingest(c, [(["main", "other"], 1)], NEW)
        out = c.post("/api/v1/storage/expire").json()["deleted"]
        assert out["samples"] == 1 and out["profiles"] == 0 and out["function_rollup"] == 0
        # Per-function time series over the old range still answer, from the rollups.
        r = c.get(
            "/api/v1/timeseries",
            params={"query": CPU + "{}", "from": str(OLD - 60), "until": str(OLD + 60), "step": "60",
                    "function": "old_only"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        assert sum(p["value"] for s in r.json()["series"] for p in s["points"]) == 5
        tenants = c.get("/api/v1/storage").json()["tenants"]
        assert tenants[0]["oldest"] // 10**9 == OLD and tenants[0]["oldest_raw"] // 10**9 == NEW


def test_rules_per_tenant_and_type(tmp_path: Path) -> None:
    retention = RetentionSettings(
        days=60,
        rollup_days=1,
        rules=[
            RetentionRule(tenant="short-lived", profile_type=CPU, days=30),
            RetentionRule(profile_type="memory:inuse_space:bytes:space:bytes", days=30),
        ],
    )
    for c in _app(tmp_path, retention):
        for tenant in ("short-lived", "kept"):
            r = c.post(
                "/api/v1/ingest",
                params={"labels": '{service_name="a"}', "ts": str(OLD)},
                content=_cpu_profile([(["main"], 1)], OLD * 1000),
                headers={"X-Scope-OrgID": tenant},
            )
            assert r.status_code == 200
        c.post("/api/v1/storage/expire")
        left = {t["tenant"]: t["profiles"] for t in c.get("/api/v1/storage").json()["tenants"]}
        # The first rule matches one tenant's CPU; the second names another type; the rest keep 60 days.
        assert left == {"kept": 1}
