"""SIGKILL under mixed load, 20 rounds: every acknowledged profile survives, no partial one appears,
and queries equal a reference computed from the acknowledged inputs.

A real ``profstore serve`` scrapes a real HTTP target every second while REST ingest clients,
a Connect Push client and a query client run against it; it is killed at a random moment,
restarted on the same file, and after the last round the database is checked against what was
acknowledged.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import httpx

from service.pprof.decode import decode
from service.pprof.encode import encode
from service.pprof.model import Profile
from service.protocols.push.v1 import push_pb2
from tests.collector.fault_server import FaultServer
from tests.conftest import Server

ROUNDS = 20
FILES = ["go119__cpu_10s.pb.gz", "go119__heap.pb.gz", "gen__go_cpu_labels.pb.gz", "gpprof__sample.cpu.pb.gz"]
CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
BASE_MS = (int(time.time()) - 3 * 86400) * 1000  # recent: retention (31 days) runs at every start


def _stream(url: str, corpus: Path, worker: int, acked: list[tuple[str, int]], stop: threading.Event) -> None:
    payloads = [(f, (corpus / f).read_bytes()) for f in FILES]
    n = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            name, data = payloads[n % len(payloads)]
            ts = BASE_MS + worker * 1_000_000 + n  # unique per request and round, in ms (all in the past)
            n += 1
            try:
                r = client.post(
                    "/api/v1/ingest",
                    params={"labels": f'{{service_name="crash",file="{name}"}}', "ts": str(ts)},
                    content=data,
                )
            except httpx.HTTPError:
                return  # the server died under us: this one was never acknowledged
            if r.status_code == 200:
                acked.append((name, ts * 10**6))


def _push(url: str, corpus: Path, worker: int, acked: list[tuple[str, int]], stop: threading.Event) -> None:
    """Pyroscope's Push: the profile's own time_nanos, made unique per request."""
    profile = decode((corpus / FILES[0]).read_bytes())
    n = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            ts = (BASE_MS + 500_000 + worker * 1_000_000 + n) * 10**6
            n += 1
            raw = _with_time(profile, ts)
            req = push_pb2.PushRequest()
            series = req.series.add()
            series.labels.add(name="service_name", value="crash-push")
            series.samples.add(raw_profile=raw)
            try:
                r = client.post(
                    "/push.v1.PusherService/Push",
                    content=req.SerializeToString(),
                    headers={"Content-Type": "application/proto"},
                )
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                acked.append(("push", ts))


def _with_time(profile: Profile, ts: int) -> bytes:
    return encode(replace(profile, time_nanos=ts))


def _query(url: str, errors: list[str], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            for path in ("/api/v1/flamegraph", "/api/v1/top", "/api/v1/profile-types"):
                try:
                    r = client.get(path, params={"query": CPU + "{}", "from": "now-7d", "until": "now"})
                except httpx.HTTPError:
                    return
                if r.status_code >= 500:
                    errors.append(f"{path}: {r.status_code} {r.text[:200]}")


def _check(db_file: Path, acked: list[tuple[str, int]]) -> None:
    con = duckdb.connect(str(db_file), read_only=True)
    try:
        stored = {
            (labels["file"], ts)
            for labels, ts in con.execute(
                "SELECT s.labels, p.ts FROM profiles p JOIN series s USING (series_id) "
                "WHERE s.labels['service_name'] = 'crash'"
            ).fetchall()
        }
        missing = [a for a in acked if a not in stored]
        assert not missing, f"{len(missing)} acknowledged profiles lost, e.g. {missing[:3]}"
        # Whole groups only: one profile row per sample type of the source.
        partial = con.execute(
            "SELECT group_id, count(*), any_value(len(sample_types)) FROM profiles GROUP BY group_id "
            "HAVING count(*) <> any_value(len(sample_types))"
        ).fetchall()
        assert not partial, partial
        # Every profile's samples and rollups are there and add up to its total.
        bad = con.execute(
            "SELECT p.profile_id, p.total, s.v, r.flat FROM profiles p "
            "LEFT JOIN (SELECT series_id, ts, sum(value) v FROM sample_values GROUP BY ALL) s USING (series_id, ts) "
            "LEFT JOIN (SELECT series_id, ts, sum(flat) flat FROM rollup_values GROUP BY ALL) r USING (series_id, ts) "
            "JOIN series x USING (series_id) "
            # Rollups count located samples only; the corpus files ingested here have no others.
            "WHERE p.total <> coalesce(s.v, 0) OR (x.labels['service_name'] = 'crash' AND p.total <> coalesce(r.flat, 0)) "
            "OR coalesce(r.flat, 0) > p.total"
        ).fetchall()
        assert not bad, bad[:5]
        dangling = con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT stack_id FROM samples) x ANTI JOIN stacks USING (stack_id)"
        ).fetchone()[0]
        dangling += con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT unnest(location_ids) location_id FROM stacks) x "
            "ANTI JOIN locations USING (location_id)"
        ).fetchone()[0]
        dangling += con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT labelset_id FROM samples WHERE labelset_id <> $zero) x "
            "ANTI JOIN labelsets USING (labelset_id)",
            {"zero": bytes(8)},  # the empty label set is not stored
        ).fetchone()[0]
        assert dangling == 0
    finally:
        con.close()


def _scrape_config(path: Path, target: str) -> Path:
    path.write_text(
        "analysis: {enabled: false}\n"
        "scrape_configs:\n"
        "  - job_name: scraped\n"
        "    scrape_interval: 1s\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
        "    profiling_config: {path_prefix: /ok, pprof_config: {process_cpu: {enabled: false}, "
        "block: {enabled: false}, mutex: {enabled: false}}}\n"
    )
    return path


def _present_after_restart(url: str, acked: list[tuple[str, int]]) -> None:
    """Every CPU profile acknowledged in the rounds before is listed by the restarted server."""
    r = httpx.get(
        f"{url}/api/v1/profiles",
        params={"query": CPU + '{service_name="crash"}', "from": str(BASE_MS // 1000 - 60), "until": "now",
                "limit": 100000},
        timeout=30,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    listed = {(p["labels"]["file"], p["ts"]) for p in r.json()["profiles"]}
    want = {(name, ts) for name, ts in acked if "cpu" in name}
    assert want <= listed, f"{len(want - listed)} acknowledged profiles missing after a restart"


def _cpu_total(data: bytes) -> int:
    p = decode(data)
    i = [t.type for t in p.sample_types].index("cpu")
    return int(p.samples.values[:, i].sum())


def test_sigkill_under_mixed_load_loses_nothing_acknowledged(tmp_path: Path, corpus: Path) -> None:
    data_dir = tmp_path / "data"
    acked: list[tuple[str, int]] = []
    query_errors: list[str] = []
    rng = random.Random(42)
    with FaultServer(corpus, 1 << 20).running() as target:
        config = _scrape_config(tmp_path / "profstore.yaml", target.address)
        for rnd in range(ROUNDS):
            srv = Server(data_dir, config).start()
            _present_after_restart(srv.url, acked)
            stop = threading.Event()
            threads = [
                threading.Thread(target=_stream, args=(srv.url, corpus, 3 * rnd + w, acked, stop)) for w in range(2)
            ]
            threads.append(threading.Thread(target=_push, args=(srv.url, corpus, rnd, acked, stop)))
            threads.append(threading.Thread(target=_query, args=(srv.url, query_errors, stop)))
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.8, 2.0))
            srv.kill()
            stop.set()
            for t in threads:
                t.join(15)
        # The last kill may leave acknowledged pushes only in the journal: a start commits them.
        srv = Server(data_dir, config).start()
        _present_after_restart(srv.url, acked)
        srv.stop()
    assert len(acked) > 100, "the load was too light to mean anything"
    print(f"crash: {ROUNDS} SIGKILL rounds, {len(acked)} acknowledged profiles, {len(query_errors)} query 5xx")
    assert not query_errors, query_errors[:3]
    _check(data_dir / "profstore.duckdb", [a for a in acked if a[0] != "push"])
    con = duckdb.connect(str(data_dir / "profstore.duckdb"), read_only=True)
    try:
        scraped = con.execute(
            "SELECT count(*) FROM profiles p JOIN series s USING (series_id) WHERE s.labels['job'] = 'scraped'"
        ).fetchone()[0]
        pushed = {
            ts for (ts,) in con.execute(
                "SELECT p.ts FROM profiles p JOIN series s USING (series_id) "
                "WHERE s.labels['service_name'] = 'crash-push' AND s.profile_type = $t", {"t": CPU},
            ).fetchall()
        }  # fmt: skip
    finally:
        con.close()
    assert scraped > 0, "the scrapes never stored anything"
    assert {ts for name, ts in acked if name == "push"} <= pushed

    # The server comes back up on the killed file; its answers equal what the inputs it stored add up to.
    srv = Server(data_dir, config).start()
    try:
        totals = {f: _cpu_total((corpus / f).read_bytes()) for f in FILES if "cpu" in f}
        for f, each in totals.items():
            sel = f'{{service_name="crash",file="{f}"}}'
            params = {"query": CPU + sel, "from": str(BASE_MS // 1000 - 60), "until": "now", "limit": 100000}
            stored = httpx.get(f"{srv.url}/api/v1/profiles", params=params, timeout=30).json()["profiles"]
            acked_f = sum(1 for name, _ in acked if name == f)
            # Every acknowledged one; also those committed but killed before their answer went out
            # (at most one in flight per client and round): their clients would retry, idempotently.
            assert acked_f <= len(stored) <= acked_f + 2 * ROUNDS
            fg = httpx.get(
                f"{srv.url}/api/v1/flamegraph", params={k: v for k, v in params.items() if k != "limit"}, timeout=60
            )
            assert fg.status_code == 200, fg.text
            assert fg.json()["total"] == each * len(stored), f
        push_total = httpx.get(
            f"{srv.url}/api/v1/flamegraph",
            params={"query": CPU + '{service_name="crash-push"}', "from": str(BASE_MS // 1000 - 60), "until": "now"},
            timeout=60,
        ).json()["total"]
        assert push_total == totals[FILES[0]] * len(pushed)
    finally:
        srv.stop()
