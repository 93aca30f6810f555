"""``openapi.yaml`` is generated from the app; this fails when someone changes the API and forgets it."""

from __future__ import annotations

import yaml

from service.app import create_app
from tests.conftest import REPO


def test_openapi_yaml_is_current() -> None:
    generated = yaml.safe_dump(create_app().openapi(), sort_keys=False, allow_unicode=True)
    committed = (REPO / "openapi.yaml").read_text()
    assert committed == generated, "openapi.yaml is stale: run `profstore openapi > openapi.yaml`"


def test_every_operation_is_documented() -> None:
    spec = create_app().openapi()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), f"{method.upper()} {path} has no summary"
