"""One node writes to a lake at a time: a lease in the catalog's PostgreSQL database, taken by one
atomic upsert, renewed by its holder, lapsing when the holder stops renewing it; a second
``profstore serve`` on the same lake stops with who holds it, and starts once the first has stopped."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from service.config import StorageSettings
from service.store import lake
from tests.conftest import REPO, Server
from tests.lake.conftest import Postgres


def test_the_lease_is_held_by_one_holder_until_released_or_lapsed(postgres: Postgres, tmp_path: Path) -> None:
    storage = StorageSettings(backend="ducklake", catalog=postgres.database(), data_path=f"{tmp_path}/files/")
    a, b = lake.connect(storage, tmp_path / "ext"), lake.connect(storage, tmp_path / "ext")
    assert lake.take_lease(a, "node-a") == "node-a"
    assert lake.take_lease(b, "node-b") == "node-a"
    assert lake.take_lease(a, "node-a") == "node-a"  # renewed by its holder
    lake.release_lease(a, "node-a")
    assert lake.take_lease(b, "node-b", seconds=0.5) == "node-b"
    assert lake.take_lease(a, "node-a") == "node-b"
    time.sleep(1.0)  # node-b stopped renewing
    assert lake.take_lease(a, "node-a") == "node-a"


def test_a_second_node_on_one_lake_stops_with_who_writes_to_it(postgres: Postgres, tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        f"storage:\n  backend: ducklake\n  catalog: '{postgres.database()}'\n  data_path: {tmp_path / 'files'}/\n"
    )
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = Server(tmp_path / "one" / "data", config).start()
    try:
        second = Server(tmp_path / "two" / "data", config)
        refused = subprocess.run(second.command(), capture_output=True, text=True, timeout=120, cwd=REPO)
        assert refused.returncode != 0
        assert "another node writes to this lake" in refused.stderr and str(tmp_path / "one") in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        first.stop()
    second.start()  # the first released its lease when it stopped
    second.stop()
