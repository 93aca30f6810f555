"""Several nodes (each its own ``Database``, data directory and journal) writing to one DuckLake at once.

What they push, split between them and sharing series labels and symbols, reads back as one DuckDB
file that got every push once: same series with the same first and last seen, same totals, same
merged stacks and functions, no row twice. A commit that loses to another node's is run again
(counted); a push repeated on the other node is a duplicate (from the writer's memory of what
the node's copy of the lake read, forgotten when the lake deletes profiles); ``fold`` makes ``series`` exact and
keeps one row per series; rows stored twice (two nodes committing the same new symbol at once)
change no answer, and ``dedupe`` removes them.

The writer lease that keeps main's lake to one node is bypassed here (the maintenance lease and
write fence replace it).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.compute as pc
import pytest

from service.config import StorageSettings
from service.pprof.decode import decode
from service.store.db import Database
from service.store.export_rows import export_rows
from service.store.function_reads import function_values, heavy_functions
from service.store.ingest import Ingestor
from service.store.reads import data_span, find_series, label_values, list_series, span_stacks
from service.store.series_fold import DEDUPED, dedupe, fold
from service.store.stack_reads import merged_stacks, stack_rows
from service.store.writer import Writer
from service.types import TimeRange
from tests.conftest import Server
from tests.lake.conftest import Postgres

T0 = 1_700_000_000_000_000_000
SEC = 10**9
FILES = ["go119__cpu_10s.pb.gz", "go119__heap.pb.gz", "gen__cpu_span_id_some.pb.gz"]
EVERYTHING = TimeRange(0, 2**62)


def _pushes(corpus: Path, n: int) -> list[tuple[bytes, dict[str, str], int]]:
    """``n`` pushes of the corpus files, two instances' series each, a second apart."""
    return [
        ((corpus / FILES[i % len(FILES)]).read_bytes(), {"service_name": "w", "instance": f"i{i % 2}"}, T0 + i * SEC)
        for i in range(n)
    ]


@pytest.fixture
def storage(postgres: Postgres, tmp_path: Path) -> StorageSettings:
    return StorageSettings(backend="ducklake", catalog=postgres.database(), data_path=f"{tmp_path}/files/")


@pytest.fixture
def nodes(storage: StorageSettings, tmp_path: Path) -> Iterator[list[Database]]:
    dbs = [Database(tmp_path / f"node{i}", storage=storage, linger_s=0.05) for i in range(2)]
    try:
        yield dbs
    finally:
        for db in dbs:
            db.close()


def _push_concurrently(nodes: list[Database], pushes: list[tuple[bytes, dict[str, str], int]]) -> None:
    """Each node pushes its share (every other push) from its own thread, all at once."""
    start = threading.Barrier(len(nodes))
    errors: list[BaseException] = []

    def run(k: int) -> None:
        ing = Ingestor(nodes[k])
        start.wait()
        try:
            for data, labels, ts in pushes[k :: len(nodes)]:
                assert not ing.ingest(data, labels=labels, ts=ts).duplicate
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for db in nodes:
        db.writer.settle(60)


def _answers(cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The store's reads over everything: series, spans, totals, merged stacks, functions, label values."""
    series = list_series(cur, "anonymous")
    out: dict[str, Any] = {
        "series": [(s.series_id, str(s.profile_type), s.labels, s.first_seen, s.last_seen) for s in series],
        "found": [(s.series_id, s.first_seen, s.last_seen) for s in find_series(cur, "anonymous", tr=EVERYTHING)],
        "span": data_span(cur, "anonymous"),
        "instances": label_values(cur, "anonymous", "instance"),
    }
    spans = [
        r[0]
        for r in cur.execute(
            "SELECT DISTINCT strs[list_position(keys, 'span_id')] FROM labelsets WHERE list_position(keys, 'span_id') > 0"
        ).fetchall()
    ]
    for s in series:
        one = [s.series_id]
        stacks = merged_stacks(cur, one, EVERYTHING, "sum", [(0, EVERYTHING.start, EVERYTHING.end)])
        ex = export_rows(cur, one, EVERYTHING)
        names = stack_rows(cur, stacks["stack_id"])
        heavy = heavy_functions(cur, one, EVERYTHING, 0.01)
        out[f"{s.series_id}"] = {
            "stacks": sorted(zip(stacks["stack_id"].to_pylist(), stacks["value"].to_pylist(), strict=True)),
            "export": sorted(zip(ex.samples["sample_type"].to_pylist(), ex.samples["value"].to_pylist(), strict=True)),
            "rows": {k: getattr(ex, k).num_rows for k in ("stacks", "locations", "functions", "mappings", "labelsets")},
            "names": {k: getattr(names, k).num_rows for k in ("stacks", "locations", "functions", "mappings")},
            "heavy": heavy,
            "values": sorted(map(tuple, zip(*function_values(cur, one, EVERYTHING, heavy[:5]).values(), strict=True))),
            "spans": pc.sum(span_stacks(cur, one, EVERYTHING, spans)["value"]).as_py(),
        }
    return out


def _file_answers(tmp_path: Path, pushes: list[tuple[bytes, dict[str, str], int]]) -> dict[str, Any]:
    """What one DuckDB file answers after every push once: the truth the lake is held to."""
    db = Database(tmp_path / "file")
    try:
        ing = Ingestor(db)
        for data, labels, ts in pushes:
            ing.ingest(data, labels=labels, ts=ts)
        with db.read(timeout_s=300) as cur:
            return _answers(cur)
    finally:
        db.close()


def _copies(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows stored more than once, per table that has any."""
    out = {}
    for table, key in {**DEDUPED, "series": "series_id"}.items():
        n = cur.execute(f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}").fetchone()[0]  # type: ignore[index]
        if n:
            out[table] = n
    return out


def _series_truth(cur: duckdb.DuckDBPyConnection) -> list[tuple[int, int, int]]:
    """Each series' first and last profile time, from the profiles themselves."""
    return cur.execute("SELECT series_id, min(ts), max(ts) FROM profiles GROUP BY ALL ORDER BY ALL").fetchall()


def _series_rows(cur: duckdb.DuckDBPyConnection, table: str) -> list[tuple[int, int, int]]:
    return cur.execute(f"SELECT series_id, first_seen, last_seen FROM {table} ORDER BY ALL").fetchall()


def test_nodes_pushing_at_once_store_every_push_once_and_read_as_one_file(
    nodes: list[Database], corpus: Path, tmp_path: Path
) -> None:
    pushes = _pushes(corpus, 12)
    _push_concurrently(nodes, pushes)
    truth = _file_answers(tmp_path, pushes)
    for db in nodes:  # every node reads the whole lake, and answers as the file does
        with db.read(timeout_s=300) as cur:
            assert _answers(cur) == truth
            assert cur.execute("SELECT count(*) FROM profiles").fetchone() == (
                cur.execute("SELECT count(DISTINCT (group_id, type_index)) FROM profiles").fetchone()
            )
    with nodes[0].read(timeout_s=300) as cur:
        # Without a fold, ``series`` lags (no per-batch update on a lake); series_seen does not.
        assert _series_rows(cur, "series_seen") == _series_truth(cur)
    folded = nodes[0].writer.call(fold).result(60)
    assert folded.snapshot is not None and folded.snapshot > 0
    with nodes[1].read(timeout_s=300) as cur:
        assert _series_rows(cur, "series") == _series_truth(cur)  # exact, one row per series
        assert _answers(cur) == truth


def test_a_commit_that_loses_to_another_nodes_is_run_again(
    nodes: list[Database], corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node 0's batch is interleaved by hand: node 1 commits a push between node 0's statements and
    its COMMIT. DuckLake refuses node 0's commit; node 0 runs its batch again at once, without
    refusing pushes meanwhile, and both pushes are stored once."""
    first, second = _pushes(corpus, 2)
    other = Ingestor(nodes[1])
    interleaved = threading.Event()
    real = Writer._append

    class Interleaved:
        def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
            self._con = con

        def __getattr__(self, name: str) -> Any:
            return getattr(self._con, name)

        def execute(self, sql: str, *args: Any) -> Any:
            if sql == "COMMIT" and not interleaved.is_set():
                interleaved.set()
                data, labels, ts = second
                assert not other.ingest(data, labels=labels, ts=ts).duplicate
                nodes[1].writer.settle(60)
            return self._con.execute(sql, *args)

    def append(self: Writer, con: duckdb.DuckDBPyConnection, rows: Any) -> None:
        real(self, Interleaved(con) if self is nodes[0].writer else con, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(Writer, "_append", append)
    data, labels, ts = first
    assert not Ingestor(nodes[0]).ingest(data, labels=labels, ts=ts).duplicate
    nodes[0].writer.settle(60)
    assert interleaved.is_set()
    assert nodes[0].writer.conflicts >= 1 and nodes[1].writer.conflicts == 0
    truth = _file_answers(tmp_path, [first, second])
    for db in nodes:
        with db.read(timeout_s=300) as cur:
            assert _answers(cur) == truth
            assert _copies(cur) == {}


def test_a_push_repeated_on_another_node_is_stored_once(nodes: list[Database], corpus: Path) -> None:
    """Once the other node's copy of the lake caught up with the commit (its thread does every
    CATCH_UP_S, every read does), and on the same node at once (its writer remembers)."""
    data, labels, ts = _pushes(corpus, 1)[0]
    assert not Ingestor(nodes[0]).ingest(data, labels=labels, ts=ts).duplicate
    nodes[0].writer.settle(60)
    assert Ingestor(nodes[0]).ingest(data, labels=labels, ts=ts).duplicate
    assert nodes[1].replica is not None
    nodes[1].replica.catch_up()
    assert Ingestor(nodes[1]).ingest(data, labels=labels, ts=ts).duplicate
    for db in nodes:
        with db.read(timeout_s=300) as cur:
            assert cur.execute("SELECT count(*), count(DISTINCT group_id) FROM profiles").fetchone() == (2, 1)


def test_what_the_copy_read_is_a_duplicate_from_memory_until_the_lake_deletes_it(
    nodes: list[Database], corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy of the lake tells the writer which profiles it read (any node's): a repeat of
    another node's push is then a duplicate without asking the copy; a deletion from ``profiles``
    makes the writer forget, and the push is stored again."""
    mine, theirs = _pushes(corpus, 2)
    assert not Ingestor(nodes[1]).ingest(mine[0], labels=mine[1], ts=mine[2]).duplicate  # its writer's first batch
    nodes[1].writer.settle(60)
    assert not Ingestor(nodes[0]).ingest(theirs[0], labels=theirs[1], ts=theirs[2]).duplicate
    nodes[0].writer.settle(60)
    assert nodes[1].replica is not None
    nodes[1].replica.catch_up()

    def asked(*_: object) -> set[int]:
        raise AssertionError("the writer asked the copy")

    with monkeypatch.context() as m:
        m.setattr("service.store.writer._select_stored", asked)
        assert Ingestor(nodes[1]).ingest(theirs[0], labels=theirs[1], ts=theirs[2]).duplicate
    with nodes[0].read(timeout_s=300, direct=True) as cur:
        cur.execute("DELETE FROM samples WHERE ts = $t", {"t": theirs[2]})
        cur.execute("DELETE FROM profiles WHERE ts = $t", {"t": theirs[2]})
    nodes[1].replica.catch_up()
    assert not Ingestor(nodes[1]).ingest(theirs[0], labels=theirs[1], ts=theirs[2]).duplicate
    nodes[1].writer.settle(60)
    with nodes[1].read(timeout_s=300) as cur:
        assert cur.execute("SELECT count(*) FROM profiles WHERE ts = $t", {"t": theirs[2]}).fetchone()[0] > 0


def test_fold_makes_series_exact_after_late_profiles_and_keeps_one_row_per_series(
    nodes: list[Database], corpus: Path
) -> None:
    """A profile older than its series' first one, committed after a fold (a backfill), is seen at
    once and folded by the next fold: the watermark is a lake snapshot, not a profile time."""
    pushes = _pushes(corpus, 4)
    _push_concurrently(nodes, pushes)
    db = nodes[0]
    db.writer.call(fold).result(60)
    data, labels, _ = pushes[0]
    Ingestor(nodes[1]).ingest(data, labels=labels, ts=T0 - 3600 * SEC)  # late, and by the other node
    nodes[1].writer.settle(60)
    with db.read(timeout_s=300, direct=True) as cur:
        truth = _series_truth(cur)
        assert _series_rows(cur, "series_seen") == truth
        assert _series_rows(cur, "series") != truth  # not folded yet
        # Two nodes that store the same new series at once each insert its row (no key on a lake).
        cur.execute("INSERT INTO series SELECT * REPLACE (last_seen - 1 AS last_seen) FROM series")
        assert _copies(cur) == {"series": len(truth)}
        assert _series_rows(cur, "series_seen") == truth
        assert len(list_series(cur, "anonymous")) == len(truth)
    folded = db.writer.call(fold).result(60)
    assert folded.copies == len(truth)
    with db.read(timeout_s=300) as cur:
        assert _series_rows(cur, "series") == truth
        assert _series_rows(cur, "series_seen") == truth
        assert _copies(cur) == {}
    assert db.writer.call(fold).result(60).series == 0  # nothing new: nothing rewritten


def test_rows_stored_twice_change_no_answer_and_dedupe_removes_them(nodes: list[Database], corpus: Path) -> None:
    _push_concurrently(nodes, _pushes(corpus, 6))
    db = nodes[0]
    with db.read(timeout_s=300, direct=True) as cur:
        before = _answers(cur)
        for table in DEDUPED:  # what two nodes committing the same new rows at once leave
            cur.execute(f"INSERT INTO {table} SELECT * FROM {table}")
        cur.execute("INSERT INTO series SELECT * FROM series")
        copies = _copies(cur)
        assert set(copies) == {*DEDUPED, "series"}
        assert _answers(cur) == before
    removed = db.writer.call(dedupe).result(120)
    assert removed.removed == copies
    with nodes[1].read(timeout_s=300) as cur:
        assert _copies(cur) == {}
        assert _answers(cur) == before
    assert db.writer.call(dedupe).result(120).removed == {}  # nothing twice: nothing rewritten


def _visible(url: str, t0: int, truth: dict[str, object]) -> dict[str, object]:
    """The answers on ``url`` once they stop changing toward ``truth``: what another node acknowledged
    is visible here only once that node committed it (its linger, 1 s on a lake, and a commit), and
    the issue's bound for that is 5 s."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            got = _http_answers(url, t0)
        except AssertionError:  # a type the other node committed is not visible yet: 404
            got = {}
        if got == truth or time.monotonic() > deadline:
            return got or _http_answers(url, t0)
        time.sleep(0.2)


def _http_answers(url: str, t0: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for query in ('process_cpu{service_name="w"}', 'heap{service_name="w"}'):
        params = {"query": query, "from": str(t0 - 60), "until": str(t0 + 60)}
        top = httpx.get(f"{url}/api/v1/top", params=params, timeout=120)
        assert top.status_code == 200, top.text
        export = httpx.get(f"{url}/api/v1/export", params=params, timeout=120)
        assert export.status_code == 200, export.text
        series = httpx.get(f"{url}/api/v1/series", params=params, timeout=120)
        assert series.status_code == 200, series.text
        out[query] = (top.json(), _export_facts(export.content), series.json())
    return out


def test_two_serve_processes_on_one_lake_answer_as_one_file_node(
    postgres: Postgres, tmp_path: Path, corpus: Path
) -> None:
    t0 = int(time.time()) - 600  # recent: retention would delete older profiles
    pushes = [(FILES[i % 2], {"service_name": "w", "instance": f"i{i % 3}"}, t0 + i) for i in range(12)]
    config = tmp_path / "node.yaml"
    config.write_text(
        f"storage:\n  backend: ducklake\n  catalog: '{postgres.database()}'\n  data_path: {tmp_path / 'files'}/\n"
    )
    (tmp_path / "file").mkdir()
    file = Server(tmp_path / "file" / "data").start()
    try:
        for name, labels, ts in pushes:
            r = httpx.post(f"{file.url}/api/v1/ingest", params={"labels": _selector(labels), "ts": str(ts)},
                           content=(corpus / name).read_bytes(), timeout=60)  # fmt: skip
            assert r.status_code == 200, r.text
        truth = _http_answers(file.url, t0)
    finally:
        file.stop()
    nodes = []
    for k in range(2):
        (tmp_path / f"n{k}").mkdir()
        nodes.append(Server(tmp_path / f"n{k}" / "data", config).start())
    try:

        def push(k: int) -> list[bool]:
            out = []
            for name, labels, ts in pushes[k::2]:
                r = httpx.post(f"{nodes[k].url}/api/v1/ingest", params={"labels": _selector(labels), "ts": str(ts)},
                               content=(corpus / name).read_bytes(), timeout=60)  # fmt: skip
                assert r.status_code == 200, r.text
                out.append(r.json()["duplicate"])
            return out

        with ThreadPoolExecutor(2) as pool:
            assert list(pool.map(push, range(2))) == [[False] * 6, [False] * 6]
        for node in nodes:
            got = _visible(node.url, t0, truth)
            for q in truth:
                for i, what in enumerate(("top", "export", "series")):
                    assert got[q][i] == truth[q][i], (q, what)
        name, labels, ts = pushes[0]  # pushed to node 0 before: a copy on node 1
        again = httpx.post(f"{nodes[1].url}/api/v1/ingest", params={"labels": _selector(labels), "ts": str(ts)},
                           content=(corpus / name).read_bytes(), timeout=60)  # fmt: skip
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert _http_answers(nodes[1].url, t0) == truth
    finally:
        for node in nodes:
            node.stop()


def _export_facts(body: bytes) -> tuple[object, ...]:
    """What a merged export says, independent of the order DuckDB happened to emit rows in: sample
    types, their totals, and how many samples, locations, functions and mappings it holds."""
    p = decode(body)
    return (
        [(t.type, t.unit) for t in p.sample_types],
        p.totals().tolist(),
        len(p.samples.offsets) - 1,
        len(p.locations),
        len(p.functions),
        len(p.mappings),
        len(gzip.decompress(body)),
    )


def _selector(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
