"""The deployment files hold together: what Grafana is provisioned with points at profstore and asks
only for what profstore stores, and the compose file mounts files that exist.

(Docker and Grafana cannot run here: no daemon and no image registry. These checks are what can
be proven without them; the protocol itself is tested against a running server in
tests/api/test_connect.py.)
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.config import load_settings
from service.query.selector import parse_selector
from service.types import ProfileType
from tests.conftest import REPO, free_port

DEPLOY = REPO / "deploy"
# What profstore stores for a Go service's default endpoints (see README "Profile types").
GO_TYPES = {
    "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
    "memory:inuse_space:bytes:space:bytes",
    "goroutine:goroutine:count:goroutine:count",
}


def _targets(node: Any) -> list[dict[str, Any]]:
    """Every query object (a dict with a datasource and a refId) anywhere in the dashboard."""
    out = []
    if isinstance(node, dict):
        if "refId" in node and ("profileTypeId" in node or "url" in node or "type" in node):
            out.append(node)
        for v in node.values():
            out += _targets(v)
    elif isinstance(node, list):
        for v in node:
            out += _targets(v)
    return out


def test_data_source_is_grafanas_pyroscope_pointing_at_profstore() -> None:
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/profstore.yaml").read_text())
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    assert by_uid["profstore"]["type"] == "grafana-pyroscope-datasource"
    assert by_uid["profstore"]["url"] == "http://profstore:4040"
    assert by_uid["profstore-rest"]["url"] == "http://profstore:4040"


def test_dashboard_queries_what_profstore_answers() -> None:
    dash = json.loads((DEPLOY / "grafana/dashboards/profstore.json").read_text())
    variables = {v["name"] for v in dash["templating"]["list"]}
    queries = _targets(dash)
    pyro = [q for q in queries if "profileTypeId" in q and "labelSelector" in q]
    assert {q["profileTypeId"] for q in pyro} - {"$profile_type"} == GO_TYPES
    for q in pyro:
        if not q["profileTypeId"].startswith("$"):
            ProfileType.parse(q["profileTypeId"])
        # Grafana substitutes variables before sending; a regex matcher takes any value of $service.
        parse_selector(re.sub(r"\$(\w+)", lambda m: "x" if m.group(1) in variables else m.group(0), q["labelSelector"]))
        assert q["queryType"] in ("metrics", "profile", "both")
    rest = [q for q in queries if q.get("source") == "url"]
    paths = {re.sub(r"^https?://[^/]+", "", q["url"]) for q in rest}
    assert paths == {"/api/v1/regressions", "/api/v1/annotations"}
    spec = yaml.safe_load((REPO / "openapi.yaml").read_text())
    assert paths <= set(spec["paths"])
    fields = set(spec["components"]["schemas"]["RegressionOut"]["properties"])
    table = next(q for q in rest if q["url"].endswith("/regressions"))
    assert {c["selector"] for c in table["columns"]} <= fields
    annotation = set(spec["components"]["schemas"]["Annotation"]["properties"])
    notes = next(q for q in rest if q["url"].endswith("/annotations"))
    assert {c["selector"] for c in notes["columns"]} <= annotation


def test_compose_mounts_and_builds_what_exists() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"profstore", "grafana", "demo"}
    assert (DEPLOY / services["profstore"]["build"]["context"] / services["profstore"]["build"]["dockerfile"]).is_file()
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), src
    settings = load_settings(DEPLOY / "profstore.compose.yaml")
    assert settings.scrape_configs[0].static_configs[0].targets == ["demo:6060"]


def _image_command() -> list[str]:
    """The container's command: the image's ENTRYPOINT followed by the compose service's command,
    with the compose file's mounts (its config file, the data volume) as they appear inside."""
    entry = next(line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("ENTRYPOINT"))
    service = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["profstore"]
    return [*json.loads(entry.removeprefix("ENTRYPOINT")), *service["command"]]


def _unit_command() -> list[str]:
    unit = (DEPLOY / "profstore.service").read_text()
    return shlex.split(re.search(r"^ExecStart=(.*)$", unit, re.M).group(1))  # type: ignore[union-attr]


def _make_run_command() -> list[str]:
    serve = next(line for line in (DEPLOY / "run-local.sh").read_text().splitlines() if " serve " in line)
    return shlex.split(serve.replace('"$BIN/profstore"', "profstore"))


@pytest.mark.parametrize("shipped", [_image_command, _unit_command, _make_run_command], ids=lambda f: f.__name__)
def test_every_shipped_command_line_starts_with_its_shipped_config(
    shipped: Callable[[], list[str]], tmp_path: Path
) -> None:
    """Each way we ship to start profstore, run as written outside its container or unit: only the
    paths it names on the target machine and its port become this test's, and it must become
    healthy (the image's command once refused to start: all interfaces and a config without tokens)."""
    port = free_port()
    mounts = {
        "/data": str(tmp_path / "data"),
        "/var/lib/profstore": str(tmp_path / "data"),
        "./data": str(tmp_path / "data"),
    }
    mounts["/etc/profstore/profstore.yaml"] = str(DEPLOY / "profstore.compose.yaml")  # the compose file's mount
    mounts["profstore.example.yaml"] = str(REPO / "profstore.example.yaml")  # make run's working directory
    args = []
    for arg in shipped():
        if re.fullmatch(r"(0\.0\.0\.0|127\.0\.0\.1):4040", arg):
            arg = f"{arg.split(':')[0]}:{port}"
        elif arg == "profstore" or arg.endswith("/.venv/bin/profstore"):
            arg = str(Path(sys.executable).with_name("profstore"))
        args.append(mounts.get(arg, arg))
    assert args[1] == "serve" and not [a for a in args if "4040" in a or a.startswith(("/opt/", "/etc/"))], args
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _healthy(url):
            assert proc.poll() is None, f"{' '.join(args)} exited with {proc.returncode}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        if shipped is _image_command:  # Grafana's provisioned data sources are let in, nobody else
            sources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/profstore.yaml").read_text())
            for source in sources["datasources"]:
                header = {source["jsonData"]["httpHeaderName1"]: source["secureJsonData"]["httpHeaderValue1"]}
                assert httpx.get(f"{url}/api/v1/regressions", headers=header, timeout=10).status_code == 200
            assert httpx.get(f"{url}/api/v1/regressions", timeout=10).status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
