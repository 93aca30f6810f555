"""One ``profstore serve`` node on a DuckLake answers as the DuckDB file does: the same pushes give
the same top table and the same export, on a lake in a directory and on S3, and they are still
there after the node restarts (they live in the lake, not in the node)."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.lake.conftest import S3, Postgres

FILES = ["go119__cpu_10s.pb.gz", "go119__heap.pb.gz", "go119__goroutine.pb.gz"]
T0 = int(time.time()) - 600  # recent: retention would delete older profiles at the restart


def _push_all(url: str, corpus: Path) -> None:
    for i, name in enumerate(FILES):
        r = httpx.post(
            f"{url}/api/v1/ingest",
            params={"labels": f'{{service_name="lake",instance="i{i}"}}', "ts": str(T0 + i)},
            content=(corpus / name).read_bytes(),
            timeout=60,
        )
        assert r.status_code == 200, r.text


def _answers(url: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for query in ('process_cpu{service_name="lake"}', 'heap{service_name="lake"}', 'goroutine{service_name="lake"}'):
        params = {"query": query, "from": str(T0 - 60), "until": str(T0 + 60)}
        top = httpx.get(f"{url}/api/v1/top", params=params, timeout=60)
        assert top.status_code == 200, top.text
        export = httpx.get(f"{url}/api/v1/export", params=params, timeout=60)
        assert export.status_code == 200, export.text
        out[query] = (top.json(), len(gzip.decompress(export.content)))
    return out


@pytest.fixture(scope="module")
def file_answers(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> dict[str, object]:
    srv = Server(tmp_path_factory.mktemp("file") / "data").start()
    try:
        _push_all(srv.url, corpus)
        return _answers(srv.url)
    finally:
        srv.stop()


@pytest.fixture(params=["directory", "s3"])
def lake_node(request: pytest.FixtureRequest, postgres: Postgres, s3: S3, tmp_path: Path) -> Iterator[Server]:
    if request.param == "directory":
        storage = f"  data_path: {tmp_path / 'files'}/\n"
    else:
        storage = (
            f"  data_path: s3://{s3.bucket}/{tmp_path.name}/\n"
            f"  s3: {{endpoint: '{s3.endpoint}', url_style: path, use_ssl: false, key_id: test, secret: test}}\n"
        )
    config = tmp_path / "node.yaml"
    config.write_text(f"storage:\n  backend: ducklake\n  catalog: '{postgres.database()}'\n{storage}")
    srv = Server(tmp_path / "data", config)
    yield srv.start()
    srv.stop()


def test_a_lake_node_answers_as_the_file_does_and_keeps_it_over_a_restart(
    lake_node: Server, file_answers: dict[str, object], corpus: Path
) -> None:
    _push_all(lake_node.url, corpus)
    assert _answers(lake_node.url) == file_answers
    usage = httpx.get(f"{lake_node.url}/api/v1/storage", timeout=60)
    assert usage.status_code == 200, usage.text
    tables = {t["name"]: t for t in usage.json()["tables"]}
    assert tables["samples"]["rows"] > 0 and tables["samples"]["bytes"] > 0  # the lake's files, not a file's blocks
    lake_node.stop()
    lake_node.start()
    assert _answers(lake_node.url) == file_answers


def test_a_copy_of_an_old_profile_is_found_in_the_lake(lake_node: Server, corpus: Path) -> None:
    """Idempotency below the writer's memory of recent pushes reads the lake (on the journal's own
    cursor, which must have the lake in use too)."""
    data = (corpus / FILES[0]).read_bytes()
    params = {"labels": '{service_name="old"}', "ts": "1600000000"}  # years back: not in recent memory
    answers = [httpx.post(f"{lake_node.url}/api/v1/ingest", params=params, content=data, timeout=60) for _ in range(2)]
    assert [r.status_code for r in answers] == [200, 200], answers[-1].text
    assert answers[0].json()["duplicate"] is False and answers[1].json()["duplicate"] is True
