"""deploy/docker-compose.cluster.yml holds together and its nodes start: each node's command line
(the image's entrypoint and the compose command) runs with the shipped cluster config, three times,
against a real PostgreSQL and a real S3 server, and the three become one cluster.

Docker cannot run here. Only what names the machine changes: the catalog's host and port, the S3
endpoint and bucket, the data directory and the port; everything else is the shipped file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.conftest import REPO, free_port
from tests.lake.conftest import S3, Postgres

DEPLOY = REPO / "deploy"
ADMIN = {"Authorization": "Bearer profstore-demo-admin"}  # the demo's token (deploy/profstore.compose.yaml)


def test_the_cluster_compose_file_mounts_and_points_at_what_exists() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.cluster.yml").read_text())
    services = compose["services"]
    nodes = sorted(n for n in services if re.fullmatch(r"node\d", n))
    assert nodes == ["node1", "node2", "node3"]
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
    # Grafana's provisioned data sources reach "profstore": here that is nginx, in front of every node.
    nginx = (DEPLOY / "nginx.cluster.conf").read_text()
    assert sorted(re.findall(r"server (node\d):4040", nginx)) == nodes
    assert "listen 4040" in nginx and "profstore" in services
    sources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/profstore.yaml").read_text())
    assert {s["url"] for s in sources["datasources"]} == {"http://profstore:4040"}


def test_three_nodes_start_from_the_shipped_command_and_config(postgres: Postgres, s3: S3, tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.cluster.yml").read_text())
    shipped = yaml.safe_load((DEPLOY / "profstore.cluster.yaml").read_text())
    config = dict(shipped)
    config["storage"] = {
        **shipped["storage"],
        "catalog": postgres.database(),
        "data_path": f"s3://{s3.bucket}/{tmp_path.name}/",
        "s3": {**shipped["storage"]["s3"], "endpoint": s3.endpoint},
    }
    path = tmp_path / "profstore.yaml"
    path.write_text(yaml.safe_dump(config))
    entry = next(line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("ENTRYPOINT"))
    procs, urls = [], []
    try:
        for name in ("node1", "node2", "node3"):
            service = compose["services"][name]
            port = free_port()
            mounts = {"/data": str(tmp_path / name), "/etc/profstore/profstore.yaml": str(path)}
            args = []
            for arg in [*json.loads(entry.removeprefix("ENTRYPOINT")), *service["command"]]:
                arg = f"0.0.0.0:{port}" if arg == "0.0.0.0:4040" else mounts.get(arg, arg)
                args.append(str(Path(sys.executable).with_name("profstore")) if arg == "profstore" else arg)
            env = {k: str(v) for k, v in service["environment"].items()}
            with (tmp_path / f"{name}.log").open("wb") as log:
                procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 180
        states: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            for p, name in zip(procs, ("node1", "node2", "node3"), strict=True):
                assert p.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
            try:
                states = [httpx.get(f"{u}/api/v1/cluster", headers=ADMIN, timeout=5).json() for u in urls]
            except (httpx.HTTPError, ValueError):
                time.sleep(0.5)
                continue
            if all(len(s.get("nodes", [])) == 3 for s in states):  # type: ignore[arg-type]
                break
            time.sleep(0.5)
        assert [len(s["nodes"]) for s in states] == [3, 3, 3], states  # type: ignore[arg-type]
        assert all(s["backend"] == "ducklake" for s in states)
        assert httpx.get(f"{urls[0]}/api/v1/cluster", timeout=5).status_code == 401  # tokens required
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
