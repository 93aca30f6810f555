"""`make bench-selectors`: series matching and label lookups with many series, in the store vs a Python scan.

``--series`` series (default 100,000: ``--services`` services x instances x 5 profile types, with
service_name, instance, job and region labels) are written straight into the ``series`` table of
a migrated DuckDB file; the answers below read nothing else. Each request goes through the HTTP
app in process (TestClient), ``--repeat`` times after one untimed request. The reference is what
every request did before selectors reached the store: load all series of the tenant and match
them in Python (``list_series`` and the parsed matchers), timed on the same database.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.query.selector import parse_query, parse_selector
from service.store.db import DB_FILE
from service.store.migrate import upgrade
from service.store.reads import list_series
from service.types import DEFAULT_TENANT

TYPES = [
    "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
    "process_cpu:samples:count:cpu:nanoseconds",
    "memory:inuse_space:bytes:space:bytes",
    "goroutine:goroutine:count:goroutine:count",
    "block:delay:nanoseconds:contentions:count",
]
CPU = TYPES[0]


def _fill(path: Path, services: int, per_service: int) -> int:
    """Write ``services`` x ``per_service`` instances x 5 types of series; their count."""
    rows: dict[str, list[Any]] = {k: [] for k in ("series_id", "profile_type", "labels")}
    for svc in range(services):
        for inst in range(per_service):
            labels = [
                ("service_name", f"svc-{svc}"),
                ("instance", f"10.{svc // 256}.{svc % 256}.{inst}:6060"),
                ("job", "fleet"),
                ("region", f"region-{svc % 4}"),
            ]
            for pt in TYPES:
                rows["series_id"].append(len(rows["series_id"]) + 1)
                rows["profile_type"].append(pt)
                rows["labels"].append(labels)
    n = len(rows["series_id"])
    parts = [pt.split(":") for pt in rows["profile_type"]]
    table = pa.table(
        {
            "series_id": pa.array(rows["series_id"], pa.uint64()),
            "tenant": [DEFAULT_TENANT] * n,
            "profile_type": rows["profile_type"],
            **{c: [p[i] for p in parts] for i, c in enumerate(("name", "sample_type", "sample_unit", "period_type", "period_unit"))},
            "labels": pa.array(rows["labels"], pa.map_(pa.string(), pa.string())),
            "first_seen": [0] * n,
            "last_seen": [time.time_ns()] * n,
        }
    )  # fmt: skip
    con = duckdb.connect(str(path))
    con.register("new_series", table)
    con.execute("INSERT INTO series SELECT * FROM new_series")
    con.execute("CHECKPOINT")
    con.close()
    return n


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()  # untimed: caches, plans
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--instances", type=int, default=200, help="per service")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        upgrade(data / DB_FILE)
        n = _fill(data / DB_FILE, args.services, args.instances)
        app = create_app(Settings(data_dir=data))
        one = '{service_name="svc-7"}'
        with TestClient(app) as client:
            db = app.state.db

            def get(path: str, **params: str) -> Callable[[], Any]:
                def call() -> Any:
                    r = client.get(path, params=params)
                    assert r.status_code == 200, r.text
                    return r.json()

                return call

            def scan(selector: str, what: Callable[[list[Any]], Any]) -> Callable[[], Any]:
                def call() -> Any:
                    if selector.startswith("{"):
                        pt, matchers = None, parse_selector(selector)
                    else:
                        q = parse_query(selector)
                        pt, matchers = q.profile_type, q.matchers
                    with db.read() as cur:
                        every = list_series(cur, DEFAULT_TENANT)
                    return what(
                        [
                            s
                            for s in every
                            if (pt is None or s.profile_type == pt) and all(m.matches(s.labels) for m in matchers)
                        ]
                    )

                return call  # fmt: skip

            names = lambda found: sorted({k for s in found for k in s.labels})  # noqa: E731
            cases = [
                ("label names, all series", get("/api/v1/labels"), scan("{}", names)),
                ("label names, one service", get("/api/v1/labels", query=one), scan(one, names)),
                (
                    "label values (instance), one service",
                    get("/api/v1/labels/instance/values", query=one),
                    scan(one, lambda found: sorted({s.labels["instance"] for s in found})),
                ),
                (
                    "label values (service_name), all series",
                    get("/api/v1/labels/service_name/values"),
                    scan("{}", lambda found: sorted({s.labels["service_name"] for s in found})),
                ),
                (
                    "selector match: series of one service",
                    get("/api/v1/series", query=CPU + one),
                    scan(CPU + one, len),
                ),
                (
                    "selector match: regex over instances",
                    get("/api/v1/series", query=CPU + '{instance=~"10\\\\.0\\\\.7\\\\..*"}'),
                    scan(CPU + '{instance=~"10\\\\.0\\\\.7\\\\..*"}', len),
                ),
            ]
            out = [
                f"{n:,} series ({args.services} services x {args.instances} instances x {len(TYPES)} types); "
                f"{platform.machine()}, {args.repeat} requests each",
                "",
                "| request | in the store (HTTP) p50 | p95 | Python scan of all series p50 | p95 |",
                "| --- | --- | --- | --- | --- |",
            ]
            for label, ours, ref in cases:
                a50, a95 = _time(ours, args.repeat)
                b50, b95 = _time(ref, max(3, args.repeat // 5))
                out.append(
                    f"| {label} | {a50 * 1e3:.1f} ms | {a95 * 1e3:.1f} ms | {b50 * 1e3:.0f} ms | {b95 * 1e3:.0f} ms |"
                )
        print("\n".join(out))


if __name__ == "__main__":
    main()
