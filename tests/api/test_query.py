"""The query API against independent truth: ``go tool pprof`` on the export of the same query.

Top tables (with focus/ignore/hide) must equal pprof's ``-top`` node for node; flame graphs and
time series must add up to the export's totals, also when truncated; every bad parameter is a
400 with a message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.pprof_tool import top_values, totals

CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
INUSE = "memory:inuse_space:bytes:space:bytes"
# Queries against pprof's own reading of the export: on the lake with its data files on S3 too.
pytestmark = pytest.mark.backends("duckdb", "lake", "lake-s3")


def _ingest(client: TestClient, path: Path, labels: str, **params: str) -> None:
    r = client.post("/api/v1/ingest", params={"labels": labels, **params}, content=path.read_bytes())
    assert r.status_code == 200, r.text


@pytest.fixture
def loaded(client: TestClient, corpus: Path) -> TestClient:
    for f in sorted((corpus / "series").glob("cpu_0*.pb.gz")):
        _ingest(client, f, '{service_name="series"}')
    _ingest(client, corpus / "go119__cpu_10s.pb.gz", '{service_name="go"}')
    _ingest(client, corpus / "go119__heap.pb.gz", '{service_name="go"}')
    _ingest(client, corpus / "parca__stripped-cpu.pb.gz", '{service_name="stripped"}')
    return client


def _export(client: TestClient, query: str, tmp_path: Path, name: str = "e.pb.gz") -> Path:
    r = client.get("/api/v1/export", params={"query": query, "from": "0"})
    assert r.status_code == 200, r.text
    out = tmp_path / name
    out.write_bytes(r.content)
    return out


def _top(client: TestClient, query: str, **params: Any) -> dict[str, Any]:
    r = client.get("/api/v1/top", params={"query": query, "from": "0", "limit": 100_000, **params})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _pct(cell: str) -> float:
    return float(cell.rstrip("%"))


@pytest.mark.parametrize(
    ("query", "options"),
    [
        (CPU + '{service_name="series"}', ["-unit=ns"]),
        (CPU + '{service_name="go"}', ["-unit=ns"]),
        (CPU + '{service_name="stripped"}', ["-unit=ns"]),  # unsymbolized: one [binary] node
        (INUSE + '{service_name="go"}', ["-unit=B", "-sample_index=inuse_space"]),
        (CPU + '{service_name="go"}', ["-unit=ns", "-focus=sort\\."]),
        (CPU + '{service_name="go"}', ["-unit=ns", "-ignore=sha256"]),
        (CPU + '{service_name="go"}', ["-unit=ns", "-hide=runtime\\."]),
    ],
)
def test_top_equals_pprof_top_of_the_export(loaded: TestClient, tmp_path: Path, query: str, options: list[str]) -> None:
    ref = top_values(_export(loaded, query, tmp_path), *options)
    filters = {
        o.split("=", 1)[0][1:]: o.split("=", 1)[1] for o in options if o.startswith(("-focus", "-ignore", "-hide"))
    }
    got = _top(loaded, query, **filters)
    ours = {
        r["name"] + (f" ({r['inline']})" if r["inline"] else ""): (
            r["flat"],
            r["cum"],
            r["flat_percent"],
            r["cum_percent"],
        )
        for r in got["rows"]
    }
    assert set(ours) == set(ref)
    for name, (flat, cum, flat_pct, cum_pct) in ref.items():
        assert ours[name][:2] == (flat, cum), name
        assert ours[name][2] == pytest.approx(_pct(flat_pct), abs=0.005), name
        assert ours[name][3] == pytest.approx(_pct(cum_pct), abs=0.005), name
    flats = [r["flat"] for r in got["rows"]]
    assert flats == sorted(flats, reverse=True)
    assert got["rows"][-1]["sum_percent"] == pytest.approx(100.0 * sum(flats) / got["total"], abs=0.01)
    if not filters:
        assert sum(flats) == got["total"]


def test_flamegraph_totals_equal_the_export_and_survive_truncation(loaded: TestClient, tmp_path: Path) -> None:
    query = CPU + '{service_name="go"}'
    want = totals(_export(loaded, query, tmp_path))["cpu/nanoseconds"]
    full = loaded.get("/api/v1/flamegraph", params={"query": query, "from": "0"}).json()
    assert full["total"] == full["tree"]["total"] == want
    small = loaded.get("/api/v1/flamegraph", params={"query": query, "from": "0", "max_nodes": 12}).json()
    nodes = 0

    def check(node: dict[str, Any]) -> None:
        nonlocal nodes
        nodes += 1
        assert node["self"] + sum(c["total"] for c in node["children"]) == node["total"], node["name"]
        for c in node["children"]:
            check(c)

    check(full["tree"])
    nodes = 0
    check(small["tree"])
    assert small["tree"]["total"] == want
    assert nodes <= 12 + 12  # kept nodes plus at most one "other" per kept parent
    assert any(c["name"] == "other" for c in small["tree"]["children"][0]["children"]) or nodes < 24


SERVICES = ("go", "series", "stripped")


def test_top_by_group_is_each_groups_own_top(loaded: TestClient) -> None:
    grouped = _top(loaded, CPU, group_by="service_name", focus="main|sha256|\\[")
    by_service = {g["labels"]["service_name"]: g for g in grouped["groups"]}
    assert sorted(by_service) == list(SERVICES) and grouped["rows"] == []
    assert [g["total"] for g in grouped["groups"]] == sorted((g["total"] for g in grouped["groups"]), reverse=True)
    for svc in SERVICES:
        alone = _top(loaded, CPU + f'{{service_name="{svc}"}}', focus="main|sha256|\\[")
        assert by_service[svc]["total"] == alone["total"] > 0
        assert by_service[svc]["rows"] == alone["rows"]
    assert grouped["total"] == _top(loaded, CPU)["total"]


def test_flamegraph_by_group_puts_each_groups_tree_under_a_label_frame(loaded: TestClient) -> None:
    params = {"from": "0", "max_nodes": 10**6}
    grouped = loaded.get("/api/v1/flamegraph", params={"query": CPU, "group_by": "service_name", **params}).json()
    root = grouped["tree"]
    assert (
        root["total"]
        == grouped["total"]
        == loaded.get("/api/v1/flamegraph", params={"query": CPU, **params}).json()["total"]
    )
    assert [c["name"] for c in root["children"]] == [f"service_name={s}" for s in SERVICES] and root["self"] == 0
    for node in root["children"]:
        svc = node["name"].split("=", 1)[1]
        alone = loaded.get("/api/v1/flamegraph", params={"query": CPU + f'{{service_name="{svc}"}}', **params}).json()
        # The same tree below the label frame as the service's own flame graph below its root.
        assert {**node, "name": "total"} == alone["tree"]


def test_flamegraph_by_two_labels_nests_them_in_order(client: TestClient, corpus: Path) -> None:
    for zone in ("a", "b"):
        _ingest(
            client,
            corpus / "go119__cpu_10s.pb.gz",
            f'{{service_name="go",zone="{zone}"}}',
            ts=f"{1 if zone == 'a' else 2}",
        )
    _ingest(client, corpus / "go119__cpu_10s.pb.gz", '{service_name="go"}', ts="3")  # no zone: zone=""
    tree = client.get(
        "/api/v1/flamegraph", params={"query": CPU, "from": "0", "group_by": "service_name,zone", "max_nodes": 10**6}
    ).json()["tree"]
    (svc,) = tree["children"]
    assert svc["name"] == "service_name=go" and svc["total"] == tree["total"]
    assert [z["name"] for z in svc["children"]] == ["zone=", "zone=a", "zone=b"]
    assert len({z["total"] for z in svc["children"]}) == 1  # the same profile three times


def test_pyroscope_layout_holds_the_same_tree(loaded: TestClient) -> None:
    query = CPU + '{service_name="series"}'
    tree = loaded.get("/api/v1/flamegraph", params={"query": query, "from": "0"}).json()["tree"]
    fb = loaded.get("/api/v1/flamegraph", params={"query": query, "from": "0", "format": "pyroscope"}).json()
    fb = fb["flamebearer"]
    assert fb["names"][0] == "total" and fb["levels"][0] == [0, tree["total"], 0, 0]
    # Decode the levels back into (depth, x, total, self, name) and compare with the tree, depth first.
    decoded = []
    for depth, row in enumerate(fb["levels"]):
        x = 0
        for i in range(0, len(row), 4):
            dx, total, self_, name = row[i : i + 4]
            x += dx
            decoded.append((depth, x, total, self_, fb["names"][name]))
            x += total
    expect = []

    def walk(node: dict[str, Any], depth: int, x: int) -> None:
        expect.append((depth, x, node["total"], node["self"], node["name"]))
        cx = x + node["self"]
        for c in node["children"]:
            walk(c, depth + 1, cx)
            cx += c["total"]

    walk(tree, 0, 0)
    assert sorted(decoded) == sorted(expect)


def test_timeseries_adds_up_to_the_export_per_series_and_per_function(loaded: TestClient, tmp_path: Path) -> None:
    query = CPU + '{service_name="series"}'
    want = totals(_export(loaded, query, tmp_path))["cpu/nanoseconds"]
    r = loaded.get("/api/v1/timeseries", params={"query": query, "from": "0", "until": "now", "step": 86400 * 365 * 10})
    assert r.status_code == 200, r.text
    lines = r.json()["series"]
    assert sum(p["value"] for ln in lines for p in ln["points"]) == want
    fine = loaded.get("/api/v1/timeseries", params={"query": query, "from": "0", "step": 10**7}).json()
    assert sum(p["value"] for ln in fine["series"] for p in ln["points"]) == want
    # One function: its flat and cum per step add up to its flat and cum in the top table.
    row = next(r for r in _top(loaded, query)["rows"] if r["cum"] > r["flat"] > 0)
    for value in ("flat", "cum"):
        f = loaded.get(
            "/api/v1/timeseries",
            params={"query": query, "from": "0", "step": 10**7, "function": row["name"], "value": value},
        ).json()
        assert sum(p["value"] for ln in f["series"] for p in ln["points"]) == row[value]
    grouped = loaded.get(
        "/api/v1/timeseries", params={"query": CPU, "from": "0", "step": 10**7, "group_by": "service_name"}
    ).json()
    assert sorted(ln["labels"]["service_name"] for ln in grouped["series"]) == ["go", "series", "stripped"]


def test_gauges_average_over_scrapes_unless_asked_otherwise(client: TestClient, corpus: Path) -> None:
    heap = corpus / "go119__heap.pb.gz"
    for ts in (10**18, 10**18 + 15 * 10**9):  # the same heap scraped twice: avg = one scrape, sum = two
        _ingest(client, heap, '{service_name="g"}', ts=str(ts))
    q = INUSE + '{service_name="g"}'
    avg, total = _top(client, q), _top(client, q, aggregation="sum")
    assert avg["aggregation"] == "avg" and total["aggregation"] == "sum"
    assert total["total"] == 2 * avg["total"] > 0
    assert _top(client, q, aggregation="last")["total"] == avg["total"]


def _check_diff(client: TestClient, q: str, base: dict[str, str], cur: dict[str, str]) -> None:
    """The diff's per-function values are each window's own top, and its changes are sorted."""
    params = {"query": q, **base, **cur}
    r = client.get("/api/v1/diff", params={**params, "normalize": "false", "limit": 100_000})
    assert r.status_code == 200, r.text
    d = r.json()
    b_top = {
        x["name"]: x["flat"]
        for x in _top(client, q, **{"from": base["base_from"], "until": base["base_until"]})["rows"]
    }
    c_top = {x["name"]: x["flat"] for x in _top(client, q, **cur)["rows"]}
    assert d["base_total"] == sum(b_top.values()) > 0 and d["current_total"] == sum(c_top.values()) > 0
    assert {x["name"] for x in d["rows"]} == {n for n, v in (b_top | c_top).items() if b_top.get(n) or c_top.get(n)}
    for row in d["rows"]:
        assert row["base"] == b_top.get(row["name"], 0) and row["current"] == c_top.get(row["name"], 0)
        assert row["change"] == row["current"] - row["base"]
    changes = [abs(x["change"]) for x in d["rows"]]
    assert changes == sorted(changes, reverse=True)
    shares = client.get("/api/v1/diff", params={**params, "limit": 100_000}).json()
    # Two decimals, as top prints them: each share is off by at most half a hundredth.
    rows = shares["rows"]
    assert shares["normalized"] and sum(x["current_percent"] for x in rows) == pytest.approx(
        100.0, abs=0.005 * len(rows)
    )
    for x in rows:
        assert x["current_percent"] == round(100 * x["current"] / shares["current_total"], 2)
        assert x["change_points"] == pytest.approx(x["current_percent"] - x["base_percent"], abs=0.011)


H = 3600 * 10**9


@pytest.mark.parametrize(
    ("ingests", "current_until"),
    [
        # Two different profiles: the base window brings stacks the current one's naming did not meet.
        ([("before", 0), ("after", H)], H),
        # The base window's stacks are all among the current window's: all named already.
        ([("before", 0), ("before", H), ("after", H + 10**9)], H + 10**9),
    ],
)
def test_diff_of_two_windows(
    client: TestClient, corpus: Path, ingests: list[tuple[str, int]], current_until: int
) -> None:
    for which, at in ingests:
        _ingest(client, corpus / f"go119__cpu_{which}_regression_5s.pb.gz", '{service_name="d"}', ts=str(10**18 + at))
    base = {"base_from": str(10**18 - 1), "base_until": str(10**18 + 1)}
    cur = {"from": str(10**18 + H - 1), "until": str(10**18 + current_until + 1)}
    _check_diff(client, CPU + '{service_name="d"}', base, cur)


def test_diff_by_group_is_each_groups_own_diff(client: TestClient, corpus: Path) -> None:
    before, after = corpus / "go119__cpu_before_regression_5s.pb.gz", corpus / "go119__cpu_after_regression_5s.pb.gz"
    t0, t1 = 10**18, 10**18 + 3600 * 10**9
    for svc, first, second in (("a", before, after), ("b", after, before)):
        _ingest(client, first, f'{{service_name="{svc}"}}', ts=str(t0))
        _ingest(client, second, f'{{service_name="{svc}"}}', ts=str(t1))
    windows = {"base_from": str(t0 - 1), "base_until": str(t0 + 1), "from": str(t1 - 1), "until": str(t1 + 1)}
    grouped = client.get("/api/v1/diff", params={"query": CPU, "group_by": "service_name", "limit": 10**5, **windows})
    assert grouped.status_code == 200, grouped.text
    g = grouped.json()
    assert g["rows"] == [] and sorted(x["labels"]["service_name"] for x in g["groups"]) == ["a", "b"]
    for group in g["groups"]:
        svc = group["labels"]["service_name"]
        alone = client.get(
            "/api/v1/diff", params={"query": CPU + f'{{service_name="{svc}"}}', "limit": 10**5, **windows}
        ).json()
        assert (group["base_total"], group["current_total"], group["rows"]) == (
            alone["base_total"], alone["current_total"], alone["rows"]
        )  # fmt: skip
    assert g["base_total"] == sum(x["base_total"] for x in g["groups"])


def test_series_lists_what_each_holds(loaded: TestClient) -> None:
    r = loaded.get("/api/v1/series", params={"query": CPU, "from": "0"})
    assert r.status_code == 200, r.text
    by = {s["labels"]["service_name"]: s for s in r.json()}
    assert by["series"]["profiles"] == 6 and by["go"]["profiles"] == 1
    assert by["series"]["first_seen"] <= by["series"]["last_seen"]


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/api/v1/top", {"query": CPU, "focus": "("}, "invalid focus regex"),
        ("/api/v1/top", {"query": CPU, "hide": "[z-a]"}, "invalid hide regex"),
        ("/api/v1/top", {"query": "nope:x:y:z:w"}, "unknown profile type"),
        ("/api/v1/top", {"query": CPU + '{service_name=~"("}'}, "invalid regex"),
        ("/api/v1/top", {"query": CPU + "{service_name=}"}, "at position"),
        ("/api/v1/top", {"query": CPU, "limit": 10**9}, "limit"),
        ("/api/v1/top", {"query": CPU, "order": "size"}, "order"),
        ("/api/v1/top", {"query": CPU, "from": "now", "until": "now-1h"}, "reversed"),
        ("/api/v1/flamegraph", {"query": CPU, "max_nodes": -1}, "max_nodes"),
        ("/api/v1/timeseries", {"query": CPU, "step": 0}, "step must be a positive"),
        ("/api/v1/timeseries", {"query": CPU, "from": "0", "step": 1}, "the maximum is"),
        ("/api/v1/timeseries", {"query": CPU, "aggregation": "median"}, "aggregation"),
        ("/api/v1/timeseries", {"query": CPU, "from": "0", "group_by": "region"}, "group_by label 'region'"),
        ("/api/v1/top", {"query": CPU, "from": "0", "group_by": "service_name,region"}, "group_by label 'region'"),
        ("/api/v1/flamegraph", {"query": CPU, "from": "0", "group_by": "regoin"}, "group_by label 'regoin'"),
        ("/api/v1/diff", {"query": CPU, "base_from": "0", "base_until": "1", "group_by": "x"}, "group_by label 'x'"),
        ("/api/v1/diff", {"query": CPU}, "base_from"),
        ("/api/v1/series", {"query": "{}"}, "profile type"),
    ],
)
def test_bad_parameters_are_400_with_a_message(
    loaded: TestClient, path: str, params: dict[str, Any], message: str
) -> None:
    r = loaded.get(path, params=params)
    assert r.status_code == 400, (r.status_code, r.text)
    assert message in r.json()["error"], r.json()


def test_diff_export_reads_in_pprof_like_diff_base(client: TestClient, corpus: Path, tmp_path: Path) -> None:
    before, after = corpus / "go119__cpu_before_regression_5s.pb.gz", corpus / "go119__cpu_after_regression_5s.pb.gz"
    _ingest(client, before, '{service_name="d"}', ts=str(10**18))
    _ingest(client, after, '{service_name="d"}', ts=str(10**18 + 3600 * 10**9))
    q = CPU + '{service_name="d"}'
    base = {"from": str(10**18 - 1), "until": str(10**18 + 1)}
    cur = {"from": str(10**18 + 3600 * 10**9 - 1), "until": str(10**18 + 3600 * 10**9 + 1)}

    def get(params: dict[str, str], name: str) -> Path:
        r = client.get("/api/v1/export", params={"query": q, **params})
        assert r.status_code == 200, r.text
        (tmp_path / name).write_bytes(r.content)
        return tmp_path / name

    base_file, cur_file = get(base, "base.pb.gz"), get(cur, "cur.pb.gz")
    diff_file = get({**cur, "base_from": base["from"], "base_until": base["until"]}, "diff.pb.gz")
    want = top_values(cur_file, "-unit=ns", f"-diff_base={base_file}")
    assert top_values(diff_file, "-unit=ns") == want
    assert any(flat < 0 for flat, _, _, _ in want.values())  # a real diff: something went down
    r = client.get("/api/v1/export", params={"query": q, **cur, "base_from": base["from"]})
    assert r.status_code == 400 and "base_until" in r.json()["error"]


def test_an_empty_range_answers_empty_not_an_error(loaded: TestClient) -> None:
    window = {"query": CPU, "from": "1", "until": "2"}
    assert _top(loaded, CPU, **{"from": "1", "until": "2"})["rows"] == []
    fg = loaded.get("/api/v1/flamegraph", params={**window, "format": "pyroscope"}).json()["flamebearer"]
    assert fg["names"] == ["total"] and fg["levels"] == [[0, 0, 0, 0]]
    d = loaded.get("/api/v1/diff", params={**window, "base_from": "3", "base_until": "4"}).json()
    assert d["rows"] == [] and d["base_total"] == d["current_total"] == 0
    assert loaded.get("/api/v1/timeseries", params=window).json()["series"] == []


def _frames(s: Any) -> dict[tuple[str, ...], int]:
    """Value per stack of frame names (leaf first): what a stack set means, whatever its row order and name codes."""
    out: dict[tuple[str, ...], int] = {}
    for i in range(s.values.size):
        names = tuple(s.names[c] for c in s.frames[s.offsets[i] : s.offsets[i + 1]])
        out[names] = out.get(names, 0) + int(s.values[i])
    return out


@pytest.mark.parametrize("max_frames", [4_000_000, 50])
def test_stack_names_cache_names_as_the_database_does(loaded: TestClient, max_frames: int) -> None:
    from service.query.aggregation import Aggregation
    from service.query.plan import plan
    from service.query.stacks import StackNames, merge_stacks
    from service.store.source import DuckDBSource
    from service.types import TimeRange

    db = loaded.app.state.db  # type: ignore[attr-defined]
    tr = TimeRange(0, 2**62)
    with db.read() as cur:
        series = {s: [r[0] for r in cur.execute(
            "SELECT series_id FROM series WHERE labels['service_name'] = ? AND sample_type = 'cpu'", [s]
        ).fetchall()] for s in ("go", "series")}  # fmt: skip
        src = DuckDBSource(cur)
        merged = {
            s: merge_stacks(src, ids, tr, Aggregation.SUM, plan(src, ids, tr, Aggregation.SUM, raw=True))
            for s, ids in series.items()
        }
        ids = series["go"] + series["series"]
        merged["both"] = merge_stacks(src, ids, tr, Aggregation.SUM, plan(src, ids, tr, Aggregation.SUM, raw=True))
        truth = {s: _frames(StackNames().name(src, m)) for s, m in merged.items()}
        shared = StackNames(max_frames=max_frames)
        first = _frames(shared.name(src, merged["go"]))
        second = _frames(shared.name(src, merged["series"]))  # other stacks: the cache grows (or starts over)
        third = _frames(shared.name(src, merged["both"]))  # some cached, some not (a start-over drops the cached)
    assert (first, second, third) == (truth["go"], truth["series"], truth["both"]) and len(first) > 10
    if max_frames > 1000:  # everything is cached now: no lookup, so a closed cursor is never touched
        cur.close()
        assert _frames(shared.name(src, merged["go"])) == truth["go"]
