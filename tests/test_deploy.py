"""The deployment files hold together: what Grafana is provisioned with points at profstore and asks
only for what profstore stores, and the compose file mounts files that exist.

(Docker and Grafana cannot run here: no daemon and no image registry. These checks are what can
be proven without them; the protocol itself is tested against a running server in
tests/api/test_connect.py.)
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from service.config import load_settings
from service.query.selector import parse_selector
from service.types import ProfileType
from tests.conftest import REPO

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
