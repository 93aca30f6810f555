"""SIGKILL during a stream of ingests: every acknowledged profile survives, no partial one appears.

A real ``profstore serve`` takes ingests from three client threads; it is killed at a random
moment, restarted on the same file, and the database is checked against what was acknowledged.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import duckdb
import httpx

from tests.conftest import Server

ROUNDS = 3
FILES = ["go119__cpu_10s.pb.gz", "go119__heap.pb.gz", "pyro__go.cpu.labels.pb.gz", "gpprof__sample.cpu.pb.gz"]


def _stream(url: str, corpus: Path, worker: int, acked: list[tuple[str, int]], stop: threading.Event) -> None:
    payloads = [(f, (corpus / f).read_bytes()) for f in FILES]
    n = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            name, data = payloads[n % len(payloads)]
            ts = 1_700_000_000_000 + worker * 10_000_000 + n  # unique per request and round, in ms
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


def _check(db_file: Path, acked: list[tuple[str, int]]) -> None:
    con = duckdb.connect(str(db_file), read_only=True)
    try:
        stored = {
            (labels["file"], ts)
            for labels, ts in con.execute(
                "SELECT s.labels, p.ts FROM profiles p JOIN series s USING (series_id)"
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
            "WHERE p.total <> coalesce(s.v, 0) OR p.total <> coalesce(r.flat, 0)"
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


def test_sigkill_loses_no_acknowledged_profile(tmp_path: Path, corpus: Path) -> None:
    data_dir = tmp_path / "data"
    acked: list[tuple[str, int]] = []
    rng = random.Random(42)
    for rnd in range(ROUNDS):
        srv = Server(data_dir).start()
        stop = threading.Event()
        workers = [threading.Thread(target=_stream, args=(srv.url, corpus, 3 * rnd + w, acked, stop)) for w in range(3)]
        for w in workers:
            w.start()
        time.sleep(rng.uniform(1.0, 2.5))
        srv.kill()
        stop.set()
        for w in workers:
            w.join(15)
    assert len(acked) > 20, "the load was too light to mean anything"
    _check(data_dir / "profstore.duckdb", acked)
    # And the server comes back up on the killed file and serves what was acknowledged.
    srv = Server(data_dir).start()
    try:
        r = httpx.get(
            f"{srv.url}/api/v1/profiles",
            params={
                "query": 'process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="crash"}',
                "from": "0",
                "limit": 100000,
            },
        )
        assert r.status_code == 200
        # Every acknowledged one; also those committed but killed before their answer went out
        # (at most one in flight per client and round): their clients would retry, idempotently.
        acked_cpu = sum(1 for name, _ in acked if "heap" not in name)
        assert acked_cpu <= len(r.json()) <= acked_cpu + 3 * ROUNDS
    finally:
        srv.stop()
