"""The one ingest entry point: bytes in, a durable profile out.

Pushes (REST, and later Pyroscope protocols) and the collector all call :meth:`Ingestor.ingest`.
Decoding and normalization run in the caller's thread (they are CPU work that needs no lock);
only the append goes through the writer, and the call returns after the commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import xxhash

from service.pprof.decode import DecodeLimits, decompress, parse
from service.store.db import Database
from service.store.normalize import normalize
from service.types import now_ns

__all__ = ["IngestResult", "Ingestor"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    profile_ids: list[int]
    series: list[str]
    samples: int
    ts: int
    duplicate: bool


class Ingestor:
    def __init__(self, db: Database, limits: DecodeLimits | None = None) -> None:
        self.db = db
        self.limits = limits or DecodeLimits()

    def ingest(
        self,
        data: bytes,
        *,
        labels: Mapping[str, str],
        name: str | None = None,
        ts: int | None = None,
        tenant: str = "",
        source: str = "push",
    ) -> IngestResult:
        raw = decompress(data, self.limits)
        profile = parse(raw)
        when = ts if ts is not None else (profile.time_nanos or now_ns())
        norm = normalize(
            profile,
            tenant=tenant,
            labels=labels,
            name=name,
            ts=when,
            content_hash=xxhash.xxh3_64_intdigest(raw),
            source=source,
            known=self.db.known,
        )
        result = self.db.writer.submit(norm).result()
        return IngestResult(
            profile_ids=norm.profile_ids,
            series=norm.series.column("profile_type").to_pylist(),
            samples=norm.sample_rows,
            ts=when,
            duplicate=result.duplicate,
        )
