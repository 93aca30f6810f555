"""`make bench-selectors`: series matching and label lookups with many series, over the label index vs the scans it replaced.

``--services`` x ``--instances`` x 5 profile types of series (default 100,000, with service_name,
instance, job and region labels, and random 64-bit ids as the writer's label hashes are) are
stored with their label index, as the writer stores them (1,000 series a transaction), in a
migrated DuckDB file; the answers below read nothing else. Each request is timed ``--repeat``
times after one untimed call:

- through the HTTP app in process (TestClient): what a client waits for, minus the network;
- in process: the store's read alone (``service.store.reads``), same arguments; and the same
  with the label cache emptied before each call (a series' first read after a start);
- the SQL scan of every label map that answered before the index (kept here as the reference);
- the Python scan that answered before selectors reached the store: every series of the tenant
  loaded and matched by the parsed matchers (a few requests only: a second or two each).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from fastapi.testclient import TestClient

from service.api.params import label_matchers
from service.app import create_app
from service.config import Settings
from service.query.selector import Matcher, parse_query, parse_selector
from service.store.db import DB_FILE
from service.store.migrate import upgrade
from service.store.reads import PSEUDO_LABELS, LabelMatcher, find_series, label_names, label_values, list_series
from service.store.series_index import LABELS, store_series
from service.types import DEFAULT_TENANT, ProfileType

TYPES = [
    "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
    "process_cpu:samples:count:cpu:nanoseconds",
    "memory:inuse_space:bytes:space:bytes",
    "goroutine:goroutine:count:goroutine:count",
    "block:delay:nanoseconds:contentions:count",
]
CPU = TYPES[0]


def _fill(path: Path, services: int, per_service: int) -> int:
    """Store ``services`` x ``per_service`` instances x 5 types of series with their label index; their count."""
    labels, types = [], []
    for svc in range(services):
        for inst in range(per_service):
            one = [
                ("service_name", f"svc-{svc}"),
                ("instance", f"10.{svc // 256}.{svc % 256}.{inst}:6060"),
                ("job", "fleet"),
                ("region", f"region-{svc % 4}"),
            ]
            labels += [one] * len(TYPES)
            types += TYPES
    n = len(types)
    parts = [pt.split(":") for pt in types]
    ids = np.random.default_rng(17).integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    assert np.unique(ids).size == n  # 64-bit random ids: a collision is a 1e-10 event
    table = pa.table(
        {
            "series_id": pa.array(ids, pa.uint64()),
            "tenant": [DEFAULT_TENANT] * n,
            "profile_type": types,
            **{c: [p[i] for p in parts] for i, c in enumerate(("name", "sample_type", "sample_unit", "period_type", "period_unit"))},
            "labels": pa.array(labels, pa.map_(pa.string(), pa.string())),
            "first_seen": [0] * n,
            "last_seen": [time.time_ns()] * n,
        }
    )  # fmt: skip
    con = duckdb.connect(str(path))
    for start in range(0, n, 1000):  # as the writer stores a fleet's new series: a batch at a time
        store_series(con, table.slice(start, 1000))
    con.execute("CHECKPOINT")
    con.close()
    return n


# -- the SQL scan of the label maps that matched selectors before the label index (the reference) --


def _map_selector_sql(selectors: Sequence[Sequence[LabelMatcher]], params: dict[str, object]) -> str:
    ors = []
    for i, sel in enumerate(selectors):
        ands = []
        for j, (name, op, value) in enumerate(sel):
            k, v = f"k{i}_{j}", f"v{i}_{j}"
            params[v] = value
            label = PSEUDO_LABELS.get(name)
            if label is None:
                params[k] = name
                label = f"coalesce(labels[${k}], '')"
            test = {"=": f"{label} = ${v}", "!=": f"{label} <> ${v}", "=~": f"regexp_full_match({label}, ${v})"}
            ands.append(test.get(op) or f"NOT regexp_full_match({label}, ${v})")
        ors.append(" AND ".join(ands) or "TRUE")
    return "(" + " OR ".join(f"({o})" for o in ors) + ")" if ors else "TRUE"


def _map_scan(cur: duckdb.DuckDBPyConnection, what: str, pt: ProfileType | None, matchers: list[LabelMatcher]) -> Any:
    params: dict[str, object] = {"tenant": DEFAULT_TENANT}
    where = f"tenant = $tenant AND {_map_selector_sql([matchers], params)}"
    if pt is not None:
        where += " AND profile_type = $pt"
        params["pt"] = str(pt)
    if what == "series":
        sql = f"SELECT series_id, profile_type, labels, first_seen, last_seen FROM series WHERE {where} ORDER BY profile_type, series_id"
        return [(r[0], r[1], dict(r[2]), r[3], r[4]) for r in cur.execute(sql, params).fetchall()]
    if what == "names":
        sql = f"SELECT DISTINCT unnest(map_keys(labels)) AS k FROM series WHERE {where} ORDER BY k"
    else:
        params["label"] = what
        sql = f"SELECT DISTINCT labels[$label] AS v FROM series WHERE {where} AND labels[$label] IS NOT NULL ORDER BY v"
    return [r[0] for r in cur.execute(sql, params).fetchall()]  # fmt: skip


@dataclass(frozen=True)
class Case:
    label: str
    path: str
    query: str | None  # the ``query`` parameter: a selector, or a type and selector
    what: str  # "series", "names", or the label whose values are asked

    def parsed(self) -> tuple[ProfileType | None, tuple[Matcher, ...]]:
        if not self.query:
            return None, ()
        if self.query.startswith("{"):
            return None, parse_selector(self.query)
        q = parse_query(self.query)
        return q.profile_type, q.matchers


def _time(fn: Callable[[], Any], repeat: int, before: Callable[[], None] = lambda: None) -> tuple[float, float]:
    fn()  # untimed: caches, plans
    times = []
    for _ in range(repeat):
        before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50)) * 1e3, float(np.percentile(times, 99)) * 1e3


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--instances", type=int, default=200, help="per service")
    ap.add_argument("--repeat", type=int, default=100, help="requests per case over the index (the scans: fewer)")
    ap.add_argument("--no-python-scan", action="store_true", help="skip the Python scan (seconds per case)")
    args = ap.parse_args(argv)
    one = '{service_name="svc-7"}'
    cases = [
        Case("label names, all series", "/api/v1/labels", None, "names"),
        Case("label names, one service", "/api/v1/labels", one, "names"),
        Case("label values (instance), one service", "/api/v1/labels/instance/values", one, "instance"),
        Case("label values (service_name), all series", "/api/v1/labels/service_name/values", None, "service_name"),
        Case("`/api/v1/series` (match, then profile counts), one service (=)", "/api/v1/series", CPU + one, "series"),
        Case("`/api/v1/series` (match, then profile counts), regex over instances (=~)", "/api/v1/series", CPU + '{instance=~"10\\\\.0\\\\.7\\\\..*"}', "series"),
        Case("`/api/v1/series` (match, then profile counts), one service but one instance (!=)", "/api/v1/series", CPU + '{service_name="svc-7", instance!="10.0.7.3:6060"}', "series"),
        Case("`/api/v1/series` (match, then profile counts), services by regex, not two regions (=~, !~)", "/api/v1/series", CPU + '{service_name=~"svc-1.", region!~"region-[12]"}', "series"),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        upgrade(data / DB_FILE)
        n = _fill(data / DB_FILE, args.services, args.instances)
        settings = Settings(data_dir=data)
        settings.analysis.enabled = False  # its minutely run would read every series in the middle of the timings
        app = create_app(settings)
        with TestClient(app) as client:
            db = app.state.db

            def http(case: Case) -> Callable[[], Any]:
                params = {"query": case.query} if case.query else {}

                def call() -> Any:
                    r = client.get(case.path, params=params)
                    assert r.status_code == 200, r.text
                    return r.json()

                return call

            def store(case: Case) -> Callable[[], Any]:
                pt, matchers = case.parsed()
                sel = [label_matchers(matchers)]

                def call() -> Any:
                    with db.read() as cur:
                        if case.what == "series":
                            return find_series(cur, DEFAULT_TENANT, pt, sel)
                        if case.what == "names":
                            return label_names(cur, DEFAULT_TENANT, pt, sel)
                        return label_values(cur, DEFAULT_TENANT, case.what, pt, sel)

                return call

            def map_scan(case: Case) -> Callable[[], Any]:
                pt, matchers = case.parsed()

                def call() -> Any:
                    with db.read() as cur:
                        return _map_scan(cur, case.what, pt, label_matchers(matchers))

                return call

            def python_scan(case: Case) -> Callable[[], Any]:
                pt, matchers = case.parsed()

                def call() -> Any:
                    with db.read() as cur:
                        every = list_series(cur, DEFAULT_TENANT)
                    found = [
                        s
                        for s in every
                        if (pt is None or s.profile_type == pt) and all(m.matches(s.labels) for m in matchers)
                    ]
                    if case.what == "series":
                        return len(found)
                    if case.what == "names":
                        return sorted({k for s in found for k in s.labels})
                    return sorted({s.labels[case.what] for s in found if case.what in s.labels})

                return call  # fmt: skip

            out = [
                f"{n:,} series ({args.services} services x {args.instances} instances x {len(TYPES)} types); "
                f"{platform.machine()}; {args.repeat} requests each over the index, {max(5, args.repeat // 5)} "
                "over the label maps, 3 in Python",
                "",
                "| request | rows | HTTP p50 | p99 | in process p50 | p99 | cold cache p50 | label-map scan p50 | p99 | Python scan p50 |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            for case in cases:
                answer = store(case)()
                reference = map_scan(case)()
                got = [(s.series_id, str(s.profile_type), s.labels, s.first_seen, s.last_seen) for s in answer] if case.what == "series" else answer  # fmt: skip
                assert got == reference, f"{case.label}: the index and the label-map scan disagree"
                h50, h99 = _time(http(case), args.repeat)
                s50, s99 = _time(store(case), args.repeat)
                c50, _ = _time(store(case), max(5, args.repeat // 5), LABELS.clear)
                m50, m99 = _time(map_scan(case), max(5, args.repeat // 5))
                py = "—" if args.no_python_scan else f"{_time(python_scan(case), 3)[0]:,.0f} ms"
                out.append(
                    f"| {case.label} | {len(answer):,} | {h50:.1f} ms | {h99:.1f} ms | {s50:.1f} ms | {s99:.1f} ms | {c50:.1f} ms "
                    f"| {m50:.1f} ms | {m99:.1f} ms | {py} |"
                )
        print("\n".join(out))


if __name__ == "__main__":
    main()
