"""The scrape schedule: one APScheduler job per target x profile type, in the serve process.

Jobs start at a deterministic offset inside their interval (a hash of the target's key), so a
thousand targets configured at once do not all fire at second 0, and the offsets survive
restarts and reloads. Each job allows one instance: a scrape still running when the next is due
makes that run skip, counted per target. Fetched bytes wait for the writer in a bounded backlog
(``max_pending_stores``): when the writer falls behind, further runs skip (reason ``store_backlog``)
instead of piling up bytes in memory. The HTTP side is bounded by a semaphore and by one
kept-alive client per target (``collector/http.py``); decoding, deltas and the store run in a
thread pool so the event loop only waits on sockets. Nothing a target does can stop the scheduler: every scrape ends in an outcome
recorded in the health book.

On a lake, every node runs every job, and each due run first asks whether this node owns the target
now (``ownership``: rendezvous hashing over the live nodes, ``collector/ownership.py``); a run that
another node owns returns at once. The offsets are phases of the wall clock (not of this process's
start), so every node has a target's runs at the same instants: a node that takes a target over
(its owner died: 5 s without heartbeat) scrapes it at its next due run, within an interval, and at
the phase its series always had. The first scrape of a cumulative type (allocs, block, mutex) on its
new owner only sets a baseline, as after a restart: the old owner's baseline is in another process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import xxhash
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from service import __version__
from service.collector.delta import Deltas
from service.collector.health import SKIP_OVERLAP, SKIP_STORE_BACKLOG, HealthBook
from service.collector.http import HostClient
from service.collector.ownership import Owners, Ownership
from service.collector.scrape import ScrapeFailed, fetch, prepare, stored_name
from service.collector.targets import TargetGroup, TargetSpec, expand, file_sd_paths, read_file_sd
from service.errors import ProfileError, ProfstoreError
from service.metrics import Metrics
from service.pprof.decode import Envelope
from service.scrape_config import ScrapeConfig
from service.types import DecodeLimits

__all__ = ["Collector", "Sink", "first_run_in", "within_interval"]

log = logging.getLogger(__name__)

# Stores one scraped profile: (parsed profile, series labels, profile name, tenant) -> samples stored.
Sink = Callable[[Envelope, Mapping[str, str], str, str], int]

_SD_CHECK_S = 2.0  # how often file_sd files are checked for changes (a stat per file)

# Scrapes fetched and not yet stored, at most, in total: 4 x the writer's default write_batch_max,
# i.e. several batches of slack (~3 s of a 1,000-target fleet's 333 scrapes/s) before runs skip.
# Without a bound a writer that falls behind lets them grow without limit (a contended
# 1,000-target run reached ~800 MiB RSS).
DEFAULT_MAX_PENDING_STORES = 1024


class Collector:
    def __init__(
        self,
        sink: Sink,
        *,
        limits: DecodeLimits,
        metrics: Metrics,
        concurrency: int = 1000,
        max_samples: int = 1_000_000,
        max_stack_depth: int = 1024,
        workers: int = 256,
        max_pending_stores: int = DEFAULT_MAX_PENDING_STORES,
        ownership: Ownership | None = None,
        join_grace_s: float = 0.0,
    ) -> None:
        """``ownership`` (on a lake): returns this node's name and the live nodes' at each due run;
        without it this node scrapes every target. For ``join_grace_s`` after :meth:`start` a node
        that has company takes no target: the others learn of it at their next heartbeat, and until
        then they still scrape what it will own (taking it at once would scrape those twice)."""
        if max_pending_stores < 1:
            raise ValueError(f"max_pending_stores must be >= 1, got {max_pending_stores}")
        self._sink = sink
        self._limits = limits
        self._metrics = metrics
        self._concurrency = concurrency
        self._max_samples = max_samples
        self._max_stack_depth = max_stack_depth
        # Storing threads mostly wait for the writer's commit; the writer batches what they hand it,
        # so the pool must be wide enough to fill batches (16 capped a fleet at ~60 profiles/s; 128
        # capped batches at 128 profiles and a 1,000-target fleet at ~210 scrapes/s stored of 333 due,
        # 256 = the writer's default write_batch_max gave ~270 on the same shared 2 cores).
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="profstore-scrape")
        # Counted on the event loop only (taken in _run, given back when _store_later ends), so no lock.
        self._max_pending = max_pending_stores
        self._pending = 0
        self._backlogged = False  # logged once per episode, not per skipped run
        self.health = HealthBook()
        self.deltas = Deltas()
        self._ownership = ownership
        self._join_grace_s = join_grace_s
        self._join_until = 0.0
        self._owners = Owners()
        # Per key, on the event loop: how many times a due run found it owned elsewhere (_lost), and
        # that count when the stored baseline was set (_based). A scrape fetched after ownership came
        # back carries a newer count than its baseline's: it drops the baseline (set by this node
        # before another scraped it), so it stores nothing twice and sets a baseline instead.
        self._lost: dict[str, int] = {}
        self._based: dict[str, int] = {}
        self._away: set[str] = set()  # keys whose last due run here was owned elsewhere
        self._specs: dict[str, TargetSpec] = {}
        self._starts: dict[str, float] = {}
        self._configs: list[ScrapeConfig] = []
        self._base_dir = Path(".")
        self._sd_groups: dict[str, list[TargetGroup]] = {}
        self._sd_stamp: dict[str, float] = {}
        self.sd_errors: list[str] = []
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        # One client per target instance, holding its kept-alive connections (see collector/http.py).
        self._clients: dict[tuple[str, str], HostClient] = {}
        self._store_locks: dict[str, asyncio.Lock] = {}
        self._fetch_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Shared: building a TLS context (loading the CA bundle) takes ~25 ms, per client it
        # blocked the event loop for seconds when a fleet's first scrapes started.
        self._tls = ssl.create_default_context()
        self._sem: asyncio.Semaphore | None = None
        self._running = 0
        self._idle: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, configs: list[ScrapeConfig], base_dir: Path) -> None:
        self._join_until = time.monotonic() + self._join_grace_s
        self._sem = asyncio.Semaphore(self._concurrency)
        self._idle = asyncio.Event()
        self._idle.set()
        self._scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._scheduler.start()
        self._scheduler.add_job(
            self._refresh_sd, IntervalTrigger(seconds=_SD_CHECK_S), id="__file_sd__", max_instances=1, coalesce=True
        )
        self.configure(configs, base_dir)

    async def stop(self, drain_s: float = 30.0) -> None:
        """Stop scheduling; let running scrapes finish (their data is stored) for up to ``drain_s``.

        The scheduler is paused, not shut down, while they drain: shutting it down cancels them.
        """
        if self._scheduler.running:
            self._scheduler.pause()
        if self._idle is not None and not self._idle.is_set():
            log.info("waiting for %d running scrape(s) to finish", self._running)
            try:
                await asyncio.wait_for(self._idle.wait(), drain_s)
            except TimeoutError:
                log.warning("%d scrape(s) still running after %.0f s; stopping anyway", self._running, drain_s)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)

    # -- configuration ---------------------------------------------------------------------

    def configure(self, configs: list[ScrapeConfig], base_dir: Path) -> None:
        """Take a new (validated) set of scrape configs; unchanged targets keep schedule and baselines."""
        self._configs = list(configs)
        self._base_dir = base_dir
        self._sd_stamp = {}
        self._read_sd(force=True)
        self._apply(expand(self._configs, self._base_dir, self._sd_groups))

    def _apply(self, specs: list[TargetSpec]) -> None:
        new = {s.key: s for s in specs}
        for key in set(self._specs) - set(new):
            if self._scheduler.get_job(key):
                self._scheduler.remove_job(key)
            self._starts.pop(key, None)
            self._store_locks.pop(key, None)
            self._fetch_locks.pop(key, None)
            self._lost.pop(key, None)
            self._based.pop(key, None)
            self._away.discard(key)
        used = {(s.url.split("://", 1)[0], s.instance) for s in specs}
        for target in set(self._clients) - used:  # closed once its last scrape has let go of it
            self._spawn(self._clients.pop(target).aclose())
        # One reference time for every offset, and each job's first run given as such: adding
        # thousands of jobs takes a while, so a clock read per job would shift the later ones'
        # phases by that while, and APScheduler, finding a start already past when the job is
        # added, would move the first run a whole interval on (a due run never made).
        now = datetime.now(UTC)
        for key, spec in new.items():
            if self._specs.get(key) == spec and self._scheduler.get_job(key):
                continue
            start = now + timedelta(seconds=first_run_in(key, spec.interval_s, now.timestamp()))
            self._starts[key] = start.timestamp()
            self._scheduler.add_job(
                self._run,
                IntervalTrigger(seconds=spec.interval_s, start_date=start),
                next_run_time=start,
                args=[key],
                id=key,
                name=f"scrape {key}",
                max_instances=2 if "seconds" in spec.params else 1,  # see _run
                coalesce=True,
                misfire_grace_time=max(1, int(spec.interval_s)),
                replace_existing=True,
            )
        self._specs = new
        self.health.sync(specs)
        self.deltas.forget(new)
        log.info("scraping %d target(s) x profile type(s)", len(new))

    def _sd_files(self) -> dict[str, float]:
        """Every file the file_sd globs match now, with its modification time."""
        out: dict[str, float] = {}
        for cfg in self._configs:
            for sd in cfg.file_sd_configs:
                for path in file_sd_paths(sd, self._base_dir):
                    try:
                        out[path] = os.stat(path).st_mtime
                    except OSError:
                        continue
        return out

    def _read_sd(self, *, force: bool = False) -> bool:
        stamp = self._sd_files()
        if not force and stamp == self._sd_stamp:
            return False
        groups: dict[str, list[TargetGroup]] = {}
        errors: list[str] = []
        for cfg in self._configs:
            for sd in cfg.file_sd_configs:
                got, errs = read_file_sd(sd, self._base_dir)
                errors.extend(errs)
                groups.update(got)
        for err in errors:
            log.warning("file_sd: %s", err)
        # A file that fails to read keeps the targets it had: a half-written file must not empty a job.
        for path, old in self._sd_groups.items():
            if path not in groups and path in stamp:
                groups[path] = old
        self._sd_groups, self._sd_stamp, self.sd_errors = groups, stamp, errors
        return True

    async def _refresh_sd(self) -> None:
        try:
            if self._read_sd():
                self._apply(expand(self._configs, self._base_dir, self._sd_groups))
        except Exception:
            log.exception("file_sd refresh failed; the previous targets stay")

    # -- scraping --------------------------------------------------------------------------

    def owner_of(self, spec: TargetSpec) -> str | None:
        """The node that scrapes ``spec`` now, as this node sees the live set; None when not shared out."""
        if self._ownership is None:
            return None
        me, live = self._ownership()
        return self._owners(spec.owner_key, self._candidates(me, live))

    def _candidates(self, me: str, live: Sequence[str]) -> Sequence[str]:
        """The nodes that may own a target now: the live ones, less this one while it is joining."""
        if time.monotonic() < self._join_until and any(n != me for n in live):
            return tuple(n for n in live if n != me)
        return live or (me,)

    def _owned(self, spec: TargetSpec) -> bool:
        """Whether this node makes this due run; if not, the health says who does and the baseline goes.

        The baseline is dropped after the stores already waiting for it (the target's store lock),
        which free its memory; a later scrape here starts from a baseline anyway (``_lost``).
        """
        if self._ownership is None:
            return True
        me, live = self._ownership()
        node = self._owners(spec.owner_key, self._candidates(me, live))
        if node == me:
            self._away.discard(spec.key)
            self.health.owned(spec.key, owner=me)
            return True
        self.health.elsewhere(spec.key, owner=node)
        if spec.key not in self._away:  # it just left: once per stay elsewhere
            self._away.add(spec.key)
            self._lost[spec.key] = self._lost.get(spec.key, 0) + 1
            self._spawn(self._drop_baseline(spec.key))
        return False

    async def _drop_baseline(self, key: str) -> None:
        async with self._store_locks.setdefault(key, asyncio.Lock()):
            self.deltas.drop(key)

    def next_run(self, key: str) -> datetime | None:
        job = self._scheduler.get_job(key) if self._scheduler.running else None
        return job.next_run_time if job else None

    @property
    def pending_stores(self) -> int:
        """Scrapes fetched and not yet stored (waiting for their target's turn, a thread or the writer)."""
        return self._pending

    def _on_skipped(self, event: JobExecutionEvent) -> None:
        spec = self._specs.get(event.job_id)
        if spec is not None:
            self._skipped(spec)

    def _skipped(self, spec: TargetSpec, reason: str = SKIP_OVERLAP) -> None:
        self.health.skipped(spec.key, reason=reason)
        self._metrics.scrapes_skipped.labels(spec.job, spec.profile).inc()
        if reason == SKIP_OVERLAP:
            log.warning("scrape %s skipped: the previous one is still running (or the loop was busy)", spec.key)

    def _backlog_full(self, spec: TargetSpec) -> bool:
        """Whether the store backlog is full; if so the run is counted as skipped (``store_backlog``).

        Checked before the fetch (no request, no bytes) and again before its bytes join the
        backlog (fetches in flight do not count, so that CPU scrapes holding a socket for their
        ``seconds`` are bounded by ``scrape_concurrency`` only): the backlog never exceeds the bound.
        """
        if self._pending < self._max_pending:
            if self._backlogged:
                self._backlogged = False
                log.warning("store backlog below %d again: scrapes are stored again", self._max_pending)
            return False
        if not self._backlogged:
            self._backlogged = True
            log.warning(
                "store backlog full: %d scrapes wait for the writer; runs are skipped (reason %s) until it drains",
                self._pending, SKIP_STORE_BACKLOG,
            )  # fmt: skip
        self._skipped(spec, SKIP_STORE_BACKLOG)
        return True

    def _client(self, spec: TargetSpec) -> HostClient:
        target = (spec.url.split("://", 1)[0], spec.instance)
        client = self._clients.get(target)
        if client is None:
            client = self._clients[target] = HostClient(
                target[0], spec.instance, tls=self._tls, user_agent=f"profstore/{__version__}"
            )
        return client

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task and hold on to it: the event loop keeps only weak references."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _busy(self, delta: int) -> None:
        """Count scrapes and stores in progress, for the drain at shutdown."""
        assert self._idle is not None
        self._running += delta
        if self._running == 0:
            self._idle.set()
        else:
            self._idle.clear()

    async def _run(self, key: str) -> None:
        """The scheduled job: fetch only. Storing runs on in the background, so a CPU scrape whose
        fetch takes most of the interval does not make the next run skip.

        A profiling-window endpoint (CPU) may have its next run start while its fetch is still
        finishing (a busy loop resumed it late): that run waits for the fetch a little (a quarter
        of the interval, at most 2 s), then profiles for a window shortened by its lateness
        (``within_interval``). A fetch that holds on longer (a hanging target) makes it skip.
        """
        spec = self._specs.get(key)
        if spec is None or self._sem is None or self._idle is None or not self._owned(spec):
            return
        generation = self._lost.get(key, 0)
        self._busy(+1)
        lock = self._fetch_locks.setdefault(key, asyncio.Lock())  # one fetch at a time per target x type
        try:
            try:
                async with asyncio.timeout(min(2.0, spec.interval_s / 4)):
                    await lock.acquire()
            except TimeoutError:
                self._skipped(spec)
                return
            try:
                if self._backlog_full(spec):
                    return
                start = self._starts.get(spec.key)
                if start is not None:
                    late = max(0.0, (time.time() - start) % spec.interval_s)
                    self._metrics.scrape_lateness.observe(late)
                    spec = within_interval(spec, late)
                at_ns = time.time_ns()
                t0 = time.monotonic()
                try:
                    async with self._sem:
                        fetched = await fetch(self._client(spec), spec, self._limits.max_compressed_bytes)
                except ScrapeFailed as exc:
                    self._failed(spec, at_ns, time.monotonic() - t0, exc.kind, exc.message)
                    return
                except Exception as exc:  # a bug must not stop the scheduler: record it, log it, go on
                    log.exception("scrape %s failed unexpectedly", spec.key)
                    self._failed(spec, at_ns, time.monotonic() - t0, "internal", f"{type(exc).__name__}: {exc}")
                    return
            finally:
                lock.release()
            self._metrics.scrape_seconds.labels(spec.job, spec.profile).observe(fetched.seconds)
            if self._backlog_full(spec):  # dropped before decoding: the next run's delta spans both
                return
            self._busy(+1)
            self._pending += 1
            self._spawn(self._store_later(spec, fetched.data, at_ns, t0, generation))
        finally:
            self._busy(-1)

    async def _store_later(self, spec: TargetSpec, data: bytes, at_ns: int, t0: float, generation: int = 0) -> None:
        # Scrapes of one target x type are stored in order: each delta is taken against the last.
        lock = self._store_locks.setdefault(spec.key, asyncio.Lock())
        try:
            async with lock:
                if self._based.get(spec.key, 0) != generation:  # fetched after the target came back here
                    self.deltas.drop(spec.key)
                    self._based[spec.key] = generation
                loop = asyncio.get_running_loop()
                outcome, samples, notes = await loop.run_in_executor(self._pool, self._store, spec, data, at_ns)
        except ScrapeFailed as exc:
            self._failed(spec, at_ns, time.monotonic() - t0, exc.kind, exc.message)
        except Exception as exc:
            log.exception("storing scrape %s failed unexpectedly", spec.key)
            self._failed(spec, at_ns, time.monotonic() - t0, "internal", f"{type(exc).__name__}: {exc}")
        else:
            self._metrics.scrapes.labels(spec.job, spec.profile, "ok").inc()
            self._metrics.store_seconds.observe(time.monotonic() - t0)
            self.health.ok(
                spec.key, at_ns=at_ns, seconds=time.monotonic() - t0, outcome=outcome,
                size=len(data), samples=samples, notes=notes,
            )  # fmt: skip
        finally:
            self._pending -= 1
            self._busy(-1)

    def _failed(self, spec: TargetSpec, at_ns: int, seconds: float, kind: str, message: str) -> None:
        self._metrics.scrapes.labels(spec.job, spec.profile, kind).inc()
        self.health.failed(spec.key, at_ns=at_ns, seconds=seconds, kind=kind, message=message)
        log.warning("scrape %s failed (%s): %s", spec.key, kind, message)

    def _store(self, spec: TargetSpec, data: bytes, at_ns: int) -> tuple[str, int, tuple[str, ...]]:
        """Decode, limit, delta and store (in a worker thread)."""
        prepared = prepare(
            spec, data, limits=self._limits, deltas=self.deltas, scraped_at_ns=at_ns,
            max_samples=self._max_samples, max_stack_depth=self._max_stack_depth,
        )  # fmt: skip
        if prepared.envelope is None:
            return prepared.outcome, 0, prepared.notes
        try:
            samples = self._sink(prepared.envelope, spec.labels, stored_name(spec), spec.tenant)
        except ProfileError as exc:
            raise ScrapeFailed("malformed", str(exc)) from None
        except ProfstoreError as exc:  # StoreError, or the sink's own: the scrape was fine, storing it was not
            raise ScrapeFailed("store", str(exc)) from None
        return prepared.outcome, samples, prepared.notes


def first_run_in(key: str, interval_s: float, now_s: float) -> float:
    """Seconds from ``now_s`` (Unix time) to ``key``'s first due run: its phase, a hash of the key
    spread over the interval, counted from the Unix epoch. The same in every process: restarts,
    reloads and the other nodes of a lake keep each target's runs at the same instants."""
    phase = (xxhash.xxh3_64_intdigest(key.encode()) % 1_000_000) / 1_000_000 * interval_s
    return (phase - now_s) % interval_s


def within_interval(spec: TargetSpec, late_s: float) -> TargetSpec:
    """``spec`` with its profiling window (``?seconds=``) shortened by a late start, whole seconds.

    A CPU scrape profiles for interval - 1 s; started more than that second late (a busy event
    loop), it would still run when the next one is due, and that one would be skipped. Ending on
    time with a slightly shorter profile loses less: the profile says its own duration.
    """
    seconds = spec.params.get("seconds")
    slack = spec.interval_s - int(seconds) if seconds is not None and seconds.isdigit() else None
    if seconds is None or slack is None or late_s <= slack / 2:
        return spec
    shorter = max(1, int(seconds) - math.ceil(late_s))
    return dataclasses.replace(spec, params={**spec.params, "seconds": str(shorter)})
