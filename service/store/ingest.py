"""The one ingest entry point: a decoded profile in, a durable profile out.

Every source ends in :meth:`Ingestor.store_together`: REST pushes through :meth:`Ingestor.ingest`,
Pyroscope's Push and legacy ``/ingest`` after :meth:`Ingestor.read` (the body decoded once, under
the size caps) and a split by sample labels, the collector with what it scraped and deltaed. The
caller's thread does everything that is per profile — the decoding, the name and time,
validation, hashing and normalization (:mod:`service.store.digest`) and the rows
(:mod:`service.store.staging`) — so a bad request is answered at once and profiles are worked on
in parallel; the writer thread batches them into one transaction, and the call returns after the
commit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from service.metrics import Metrics
from service.pprof.decode import Envelope, read
from service.store.db import Database
from service.store.normalize import profile_ids_of
from service.store.records import decode as decode_record
from service.store.records import encode_record
from service.store.staging import StagedPart, stage_profile, with_entities
from service.store.workers import Workers
from service.store.writer import Pending
from service.types import DEFAULT_TENANT, DecodeLimits

__all__ = ["IngestResult", "Ingestor"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    profile_ids: list[int]
    series: list[str]
    samples: int
    ts: int
    duplicate: bool


class Ingestor:
    def __init__(
        self,
        db: Database,
        limits: DecodeLimits | None = None,
        metrics: Metrics | None = None,
        workers: Workers | None = None,
    ) -> None:
        self.db = db
        self.limits = limits or DecodeLimits()
        self.metrics = metrics
        self.workers = workers  # pushed pprof bodies are staged there when set
        # At most one decoding thread per core: more only queue for the GIL. (One in all pushed
        # 32 clients' profiles a little faster, 276-338 against 247-257/s, but the collector at
        # 1,000 targets x 5 types then skipped half its runs: its staging needs both cores.)
        self._decoding = threading.BoundedSemaphore(os.cpu_count() or 1)
        if metrics is not None:
            db.writer.observe_stages(self._observe)

    def _observe(self, stage: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.ingest_stage_seconds.labels(stage).inc(seconds)

    def read(self, data: bytes, parse: Callable[[bytes], Envelope] | None = None) -> Envelope:
        """Decode a pushed body once, under this ingestor's size caps (see :func:`service.pprof.decode.read`)."""
        with self._decoding:
            t = time.perf_counter()
            env = read(data, self.limits, parse)
            self._observe("decode", time.perf_counter() - t)
            return env

    def ingest(
        self,
        data: bytes,
        *,
        labels: Mapping[str, str],
        name: str | None = None,
        ts: int | None = None,
        tenant: str = DEFAULT_TENANT,
        source: str = "push",
    ) -> IngestResult:
        """Store gzipped or raw pprof bytes (a push): staged by an ingest worker when there are any."""
        if self.workers is None or not self.workers.ready:
            env = self.read(data)
            return self.store(env, labels=labels, name=name, ts=ts, tenant=tenant, source=source, size=len(data))
        t = time.perf_counter()
        ready = self.workers.prepare(data, self.limits, labels, name, ts, tenant, source)
        self._observe("worker", time.perf_counter() - t)
        for stage, seconds in (
            ("decode", ready.decode_s),
            ("digest", ready.part.digest_s),
            ("stage", ready.part.stage_s),
            ("record", ready.record_s),
        ):
            self._observe(stage, seconds)
        part = ready.part
        staged = with_entities(part.staged, lambda: decode_record(ready.record)[0][0], self.db.known)
        return self._submit([replace(part, staged=staged)], ready.record, source, [len(data)])[0]

    def close(self) -> None:
        """Stop the ingest workers (the database is closed by its owner)."""
        if self.workers is not None:
            self.workers.close()

    def store(
        self,
        env: Envelope,
        *,
        labels: Mapping[str, str],
        name: str | None = None,
        ts: int | None = None,
        tenant: str = DEFAULT_TENANT,
        source: str = "push",
        size: int | None = None,
    ) -> IngestResult:
        """Store a parsed profile (the collector parses what it scrapes itself)."""
        return self.store_together([(env, labels, ts)], name=name, tenant=tenant, source=source, size=size)[0]

    def store_together(
        self,
        parts: Sequence[tuple[Envelope, Mapping[str, str], int | None]],
        *,
        name: str | None = None,
        tenant: str = DEFAULT_TENANT,
        source: str = "push",
        size: int | None = None,
    ) -> list[IngestResult]:
        """Store profiles (env, series labels, time) together: the parts a push was split into by
        sample labels are all stored, or none (a crash never leaves half a push)."""
        with self._decoding:
            staged = [
                stage_profile(env, labels, ts, name=name, tenant=tenant, source=source, known=self.db.known)
                for env, labels, ts in parts
            ]
        # A scrape is committed without a journal record: no client waits to hear it is durable.
        # A push's record is made outside the semaphore (its compression runs without the GIL).
        t = time.perf_counter()
        journaled = source != "scrape"
        record = (
            encode_record([(env, p.meta) for (env, _, _), p in zip(parts, staged, strict=True)]) if journaled else b""
        )
        self._observe("record", time.perf_counter() - t)
        for p in staged:
            self._observe("digest", p.digest_s)
            self._observe("stage", p.stage_s)
        sizes = [env.size if size is None else size // len(parts) for env, _, _ in parts]
        envs = [None if journaled else env for env, _, _ in parts]
        return self._submit(staged, record, source, sizes, envs)

    def _submit(
        self,
        staged: list[StagedPart],
        record: bytes,
        source: str,
        sizes: list[int],
        envs: Sequence[Envelope | None] = (),
    ) -> list[IngestResult]:
        t = time.perf_counter()
        kept = list(envs) or [None] * len(staged)
        pending = [Pending(p.meta, p.staged, record, i, kept[i]) for i, p in enumerate(staged)]
        results = [fut.result() for fut in self.db.writer.submit_together(pending)]
        self._observe("wait", time.perf_counter() - t)
        out = []
        for p, result, raw in zip(staged, results, sizes, strict=True):
            item = result.item
            if self.metrics is not None and item is not None:
                self.metrics.ingested_profiles.labels(source).inc()
                self.metrics.ingested_bytes.labels(source).inc(raw)
                self.metrics.ingested_samples.labels(source).inc(item.sample_rows)
            out.append(
                IngestResult(
                    profile_ids=item.profile_ids if item else profile_ids_of(p.meta.group_id, len(p.types)),
                    series=p.types,
                    samples=item.sample_rows if item else 0,
                    ts=p.meta.ts,
                    duplicate=result.duplicate,
                )
            )
        return out
