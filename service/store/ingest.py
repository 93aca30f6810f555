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
from dataclasses import dataclass

from service.errors import InvalidRequest
from service.metrics import Metrics
from service.pprof.decode import Envelope, read
from service.store.db import Database
from service.store.digest import prepare
from service.store.normalize import Meta, infer_name, profile_ids_of, profile_types_of
from service.store.staging import stage
from service.store.writer import Pending
from service.types import DEFAULT_TENANT, DecodeLimits, now_ns

__all__ = ["IngestResult", "Ingestor"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    profile_ids: list[int]
    series: list[str]
    samples: int
    ts: int
    duplicate: bool


# Series label limits, Pyroscope's defaults (validation.Limits): a series is its labels, and
# every query lists them, so unbounded ones would make one push cost every later read.
MAX_LABEL_NAMES = 30
MAX_LABEL_NAME_LENGTH = 1024
MAX_LABEL_VALUE_LENGTH = 2048


def check_labels(labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABEL_NAMES:
        raise InvalidRequest(f"series has {len(labels)} labels; at most {MAX_LABEL_NAMES} are allowed")
    for k, v in labels.items():
        if len(k) > MAX_LABEL_NAME_LENGTH:
            raise InvalidRequest(f"label name {k[:64]!r}... is {len(k)} characters; at most {MAX_LABEL_NAME_LENGTH}")
        if len(v) > MAX_LABEL_VALUE_LENGTH:
            raise InvalidRequest(f"value of label {k[:64]!r} is {len(v)} characters; at most {MAX_LABEL_VALUE_LENGTH}")


class Ingestor:
    def __init__(self, db: Database, limits: DecodeLimits | None = None, metrics: Metrics | None = None) -> None:
        self.db = db
        self.limits = limits or DecodeLimits()
        self.metrics = metrics
        # At most one decoding thread per core: more would only queue for the GIL in front of
        # the writer thread, which is the one that must not wait.
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
        """Store gzipped or raw pprof bytes (a push)."""
        env = self.read(data)
        return self.store(env, labels=labels, name=name, ts=ts, tenant=tenant, source=source, size=len(data))

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
        """Store profiles (env, series labels, time) in one transaction: the parts a push was split
        into by sample labels are all stored, or none (a crash never leaves half a push)."""
        pending: list[tuple[Pending, list[str]]] = []
        for env, labels, ts in parts:
            check_labels(labels)
            with self._decoding:
                h = env.header
                if not h.sample_types:
                    raise InvalidRequest("profile has no sample types; nothing to store")
                named = name or infer_name(h.sample_types, h.period_type)
                types = [str(pt) for pt in profile_types_of(h, named)]
                when = ts if ts is not None else (h.time_nanos or now_ns())
                meta = Meta(tenant, dict(labels), named, when, env.content_hash, source)
                t0 = time.perf_counter()
                prepared = prepare(env)
                t1 = time.perf_counter()
                staged = stage(env, prepared, meta, self.db.known)
                self._observe("digest", t1 - t0)
                self._observe("stage", time.perf_counter() - t1)
                pending.append((Pending(env, meta, staged), types))
        t = time.perf_counter()
        futures = self.db.writer.submit_together([p for p, _ in pending])
        results = [fut.result() for fut in futures]
        self._observe("wait", time.perf_counter() - t)
        out = []
        for (p, types), result in zip(pending, results, strict=True):
            item = result.item
            if self.metrics is not None and item is not None:
                self.metrics.ingested_profiles.labels(source).inc()
                raw = p.envelope.size if size is None else size // len(parts)
                self.metrics.ingested_bytes.labels(source).inc(raw)
                self.metrics.ingested_samples.labels(source).inc(item.sample_rows)
            out.append(
                IngestResult(
                    profile_ids=item.profile_ids if item else profile_ids_of(p.meta.group_id, len(types)),
                    series=types,
                    samples=item.sample_rows if item else 0,
                    ts=p.meta.ts,
                    duplicate=result.duplicate,
                )
            )
        return out
