"""Every corpus file pprof accepts goes in through the API and comes back out with pprof's numbers.

The truth is ``go tool pprof`` on the original file: the export of a single ingested profile must
give the same ``-raw`` per-type totals and the same ``-top`` table (for the default and for every
sample type). Files pprof refuses must get a 400 with a message and leave the database unchanged.

The files are the repository's own corpus (``tests/corpus``).
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import CorpusFile, corpus_files
from tests.pprof_tool import top, totals

FILES = corpus_files()
# Go's block and mutex profiles share sample types; nothing in the bytes tells them apart.
NAMES = {"go119__block.pb.gz": "block", "go119__mutex.pb.gz": "mutex"}
TABLES = (
    "series",
    "profiles",
    "samples",
    "stacks",
    "locations",
    "functions",
    "mappings",
    "labelsets",
    "function_rollup",
)


def counts(client: TestClient) -> dict[str, int]:
    with client.app.state.db.read() as cur:  # type: ignore[attr-defined]
        return {t: cur.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def ingest(client: TestClient, f: CorpusFile) -> tuple[int, dict]:  # type: ignore[type-arg]
    params = {"labels": f'{{service_name="corpus",file="{f.name}"}}'}
    if f.name in NAMES:
        params["name"] = NAMES[f.name]
    r = client.post("/api/v1/ingest?" + urllib.parse.urlencode(params), content=f.path.read_bytes())
    return r.status_code, r.json()


@pytest.mark.parametrize("f", [f for f in FILES if f.accepted], ids=lambda f: f.name)
def test_accepted_file_round_trips(f: CorpusFile, client: TestClient, tmp_path: Path) -> None:
    round_trips(f, client, tmp_path)


@pytest.mark.parametrize("f", [f for f in FILES if not f.accepted], ids=lambda f: f.name)
def test_refused_file_gets_400_and_changes_nothing(f: CorpusFile, client: TestClient) -> None:
    refused(f, client)


def test_the_corpus_has_both_kinds() -> None:
    """The parametrizations above are never empty (an empty one would be a skip)."""
    assert sum(f.accepted for f in FILES) >= 40 and sum(not f.accepted for f in FILES) >= 3


def round_trips(f: CorpusFile, client: TestClient, tmp_path: Path) -> None:
    status, body = ingest(client, f)
    assert status == 200, body
    exported = tmp_path / "export.pb.gz"
    for i, ptype in enumerate(body["series"]):
        r = client.get("/api/v1/export", params={"query": f'{ptype}{{file="{f.name}"}}', "from": "0", "until": "now"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        exported.write_bytes(r.content)
        if i == 0:
            assert totals(exported) == totals(f.path)
        sample_type = ptype.split(":")[1]
        assert top(exported, sample_type) == top(f.path, sample_type), f"-top for {ptype}"


def refused(f: CorpusFile, client: TestClient) -> None:
    before = counts(client)
    status, body = ingest(client, f)
    assert status == 400, body
    assert body["error"].startswith(("parsing profile: ", "malformed profile: ")), body
    assert counts(client) == before


def test_heap_export_has_all_four_sample_types(client: TestClient, corpus: Path, tmp_path: Path) -> None:
    f = next(f for f in FILES if f.name == "go119__heap.pb.gz")
    status, body = ingest(client, f)
    assert status == 200
    assert body["series"] == [
        "memory:alloc_objects:count:space:bytes",
        "memory:alloc_space:bytes:space:bytes",
        "memory:inuse_objects:count:space:bytes",
        "memory:inuse_space:bytes:space:bytes",
    ]
    r = client.get("/api/v1/export", params={"query": "memory:inuse_space:bytes:space:bytes{}", "from": "0"})
    out = tmp_path / "heap.pb.gz"
    out.write_bytes(r.content)
    assert list(totals(out)) == ["alloc_objects/count", "alloc_space/bytes", "inuse_objects/count", "inuse_space/bytes"]
    assert totals(out) == totals(f.path)
