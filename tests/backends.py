"""The stores the API, query and analysis tests run on: the DuckDB file and a DuckLake.

A pytest plugin (``tests/conftest.py`` names it in ``pytest_plugins``), so that its fixtures, the
session's one PostgreSQL server and one moto server among them, are visible in every test directory. Every test under :data:`EVERY_BACKEND_DIRS` that opens a store (it asks, directly
or through ``client`` or ``server``, for the ``backend`` fixture) runs once per backend:

- ``duckdb``: the embedded DuckDB file in the test's data directory (the default everywhere else);
- ``lake``: a DuckLake whose catalog is a new PostgreSQL database and whose data files are in a
  new directory, for each store the test opens, so no test sees another's profiles;
- ``lake-s3``: the same with the data files in the moto S3 server, for the tests marked
  ``@pytest.mark.backends("duckdb", "lake", "lake-s3")`` (S3 costs more per write; a meaningful
  subset covers it).

A test that is about the DuckDB file itself (its WAL, its checkpoint, the file opened with
``duckdb.connect``) says so with ``@pytest.mark.backends("duckdb", reason=...)``: it runs on the
file only, and the reason is in the code, not in a skip.

The extensions a lake node installs from their wheels (about 100 MB copied into
``data_dir/duckdb_extensions`` on first use) are installed once per session in one directory, and
each lake store's data directory links to it: each test's own copy would cost a second and 100 MB
of disk per test (pytest keeps the last three runs' temporary directories). The first-use install
itself is what ``tests/lake`` exercises.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from bench.lakeparts import S3, Postgres, as_owner, pg_bin, postgres_server, s3_server, storage_yaml
from service.config import S3Settings, Settings, StorageSettings
from service.store import lake
from service.store.db import EXTENSION_DIR
from tests.conftest import Server

__all__ = ["BACKENDS", "EVERY_BACKEND_DIRS", "Backend", "backend", "lake_extensions", "postgres", "s3", "storage_yaml"]

BACKENDS = ("duckdb", "lake", "lake-s3")
DEFAULT_BACKENDS = ("duckdb", "lake")
# The test directories whose store-opening tests run on every backend (their paths under tests/).
EVERY_BACKEND_DIRS = ("api", "query", "analysis")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One throwaway PostgreSQL server for the session (:mod:`bench.lakeparts`); each lake asks it for a new database."""
    with postgres_server() as pg:
        yield pg


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """One moto S3 server for the session, with the bucket ``profstore-lake``."""
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@dataclass(frozen=True)
class Backend:
    """One of :data:`BACKENDS`; opens new, empty stores of its kind."""

    name: str
    postgres: Postgres | None = None
    s3: S3 | None = None
    extensions: Path | None = None  # the session's installed lake extensions

    @property
    def is_lake(self) -> bool:
        return self.name != "duckdb"

    @contextlib.contextmanager
    def store(self, data_dir: Path) -> Iterator[StorageSettings]:
        """The ``storage`` settings of a new, empty store for a node whose data directory is
        ``data_dir``; a lake's catalog database is dropped afterwards (hundreds of 7 MB databases
        would otherwise stay in the session's cluster)."""
        if not self.is_lake:
            yield StorageSettings()
            return
        assert self.postgres is not None and self.extensions is not None
        data_dir.mkdir(parents=True, exist_ok=True)
        link = data_dir / EXTENSION_DIR
        if not link.exists():
            link.symlink_to(self.extensions, target_is_directory=True)
        catalog = self.postgres.database()
        if self.name == "lake-s3":
            assert self.s3 is not None
            storage = StorageSettings(
                backend="ducklake",
                catalog=catalog,
                data_path=f"s3://{self.s3.bucket}/{uuid.uuid4().hex}/",
                s3=S3Settings(endpoint=self.s3.endpoint, url_style="path", use_ssl=False, key_id="test", secret="test"),
            )
        else:
            files = data_dir.with_name(data_dir.name + ".lake")  # beside the data directory, its own
            storage = StorageSettings(backend="ducklake", catalog=catalog, data_path=f"{files}/")
        try:
            yield storage
        finally:
            _drop(self.postgres, catalog)

    @contextlib.contextmanager
    def settings(self, data_dir: Path, **kw: Any) -> Iterator[Settings]:
        """``Settings`` of an app storing in a new store of this backend (``kw``: other settings)."""
        with self.store(data_dir) as storage:
            yield Settings(data_dir=data_dir, storage=storage, **kw)

    @contextlib.contextmanager
    def serve(self, root: Path, config: str = "") -> Iterator[Server]:
        """``profstore serve`` on a new store of this backend, its data directory ``root/data``, its
        config ``root/profstore.yaml`` holding ``config`` (YAML) and the store's ``storage`` block
        (no config file when both are empty, as before); started, and stopped afterwards."""
        with self.store(root / "data") as storage:
            text, path = config + storage_yaml(storage), root / "profstore.yaml"
            if text:
                path.write_text(text)
            srv = Server(root / "data", path if text else None).start()
            try:
                yield srv
            finally:
                srv.stop()


def _drop(pg: Postgres, catalog: str) -> None:
    name = dict(p.split("=", 1) for p in catalog.split())["dbname"]
    cmd = [str(pg_bin() / "dropdb"), "--force", "-h", str(pg.socket_dir), "-p", str(pg.port), "-U", "lake", name]
    subprocess.run(as_owner(cmd), check=True, capture_output=True, timeout=60)


def _install_extensions(root: Path) -> Path:
    """The lake extensions installed (from their wheels, as a node does) into ``root``."""
    con = duckdb.connect(config=lake.config(root))
    try:
        lake.load_extensions(con)
    finally:
        con.close()
    return root


@pytest.fixture(scope="session")
def lake_extensions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install_extensions(tmp_path_factory.mktemp("lake-extensions"))


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> Backend:
    """The backend this test runs on: ``duckdb`` unless parametrized (see the module's docstring).
    PostgreSQL and moto start only when a lake test needs them."""
    name = getattr(request, "param", "duckdb")
    if name == "duckdb":
        return Backend(name)
    return Backend(
        name,
        postgres=request.getfixturevalue("postgres"),
        s3=request.getfixturevalue("s3") if name == "lake-s3" else None,
        extensions=request.getfixturevalue("lake_extensions"),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends(*names, reason=None): the backends (of duckdb, lake, lake-s3) a test under tests/api, "
        "tests/query or tests/analysis runs on; default duckdb and lake. Fewer than the default need a reason.",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each store-opening test of :data:`EVERY_BACKEND_DIRS` once per backend."""
    if "backend" not in metafunc.fixturenames:
        return
    tests = Path(__file__).resolve().parent
    try:
        where = metafunc.definition.path.resolve().relative_to(tests).parts[0]
    except ValueError:
        return
    if where not in EVERY_BACKEND_DIRS:
        return
    names: tuple[str, ...] = DEFAULT_BACKENDS
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None:
        names = tuple(marker.args)
        unknown = set(names) - set(BACKENDS)
        if not names or unknown:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown backends {sorted(unknown)}")
        if not set(DEFAULT_BACKENDS) <= set(names) and not marker.kwargs.get("reason"):
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: backends{names} without a reason")
    metafunc.parametrize("backend", names, indirect=True, scope="module")
