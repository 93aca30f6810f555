"""Schemathesis against ``openapi.yaml`` on a running server with data: no 5xx, every answer as documented.

It generates requests from the schema (examples, boundary values, random and stateful
sequences) for every REST operation, deterministically, and checks each response: no server
error, the documented content type, a body that validates against the documented schema.
The backup operation is left out: it creates directories wherever its absolute path points.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import REPO, Server

FILES = ["go119__cpu_10s.pb.gz", "go119__heap.pb.gz", "go119__goroutine.pb.gz"]


def test_no_5xx_and_responses_match_the_schema(server: Server, corpus: Path, tmp_path: Path) -> None:
    for f in FILES:
        r = httpx.post(
            f"{server.url}/api/v1/ingest",
            params={"labels": '{service_name="checkout"}'},
            content=(corpus / f).read_bytes(),
        )
        assert r.status_code == 200, r.text
    st = Path(sys.executable).with_name("st")
    out = subprocess.run(
        [
            str(st), "run", str(REPO / "openapi.yaml"), "--url", server.url,
            "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--exclude-path", "/api/v1/storage/backup",
            "--max-examples", "25", "--generation-deterministic", "--request-timeout", "60",
        ],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    tail = out.stdout[-3000:]
    assert out.returncode == 0, tail
    m = re.search(r"(\d+) generated, (\d+) passed", out.stdout)
    assert m is not None and int(m.group(1)) == int(m.group(2)) >= 500, tail
    print(f"schemathesis: {m.group(1)} requests, all passed")
