"""The ingest journal: where an acknowledged profile is durable before DuckDB has it.

A DuckDB transaction costs 10-20 ms of CPU whatever its size (about 1 ms a statement, the
commit's WAL write and fsync), so acknowledging each push after its own commit capped one client
at 40-60 profiles/s and kept batches small. The writer instead appends each accepted push to this
log and syncs it (one ``fdatasync`` for everything that arrived together), acknowledges, and
commits to DuckDB later in batches as large as the backlog. A push is one record, so its parts
stay together; replaying a record the database already holds is harmless, because the writer
drops profiles whose idempotency key is stored.

Segments are files ``NNNNNNNNNNNN.log``: a magic line, then records framed as
``<u32 length><u32 crc32><payload>``. A segment is deleted once every record in it has been
committed to DuckDB and a newer one is being written. What a crash leaves is read back by
:meth:`Journal.recover` at start; a record cut short by the crash (never acknowledged: the sync
comes before the acknowledgement) ends its segment.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Journal"]

log = logging.getLogger(__name__)

MAGIC = b"profstore-journal-1\n"
_FRAME = struct.Struct("<II")
SEGMENT_BYTES = 64 << 20


class Journal:
    """Append, sync, and forget what DuckDB has committed; one appending thread at a time."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()  # the unapplied counts: appended by one thread, applied by another
        self._unapplied: dict[int, int] = {}  # segment -> records not yet committed to DuckDB
        self._number = max((n for n, _ in self._segments()), default=0)
        self._fd: int | None = None
        self._size = 0

    def _segments(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.directory.glob("*.log"):
            if p.stem.isdigit():
                out.append((int(p.stem), p))
        return sorted(out)

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}.log"

    def recover(self) -> list[tuple[int, bytes]]:
        """The records a previous run left unapplied, oldest first, each with its segment (call before appending)."""
        records: list[tuple[int, bytes]] = []
        for number, path in self._segments():
            data = path.read_bytes()
            if not (data.startswith(MAGIC) or MAGIC.startswith(data)):
                log.error("journal segment %s does not start like one; left as it is", path)
                continue
            found = list(_records(data, path))
            if not found:  # empty, or cut while its first record was written: nothing was acknowledged
                path.unlink()
                continue
            with self._lock:
                self._unapplied[number] = len(found)
            records += [(number, r) for r in found]
        return records

    def append(self, payloads: list[bytes]) -> int:
        """Write ``payloads`` as records and sync them; return their segment.

        On failure (a full disk) the segment is cut back to where it was, so a later record never
        follows a torn one, and the error is raised: nothing of this call was acknowledged.
        """
        if self._fd is None or self._size >= self._segment_bytes:
            self._rotate()
        assert self._fd is not None
        buf = b"".join(_FRAME.pack(len(p), zlib.crc32(p)) + p for p in payloads)
        number, start = self._number, self._size
        with self._lock:
            self._unapplied[number] = self._unapplied.get(number, 0) + len(payloads)
        try:
            view = memoryview(buf)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fdatasync(self._fd)
        except OSError:
            self.applied(number, len(payloads))
            try:
                os.ftruncate(self._fd, start)
                os.lseek(self._fd, start, os.SEEK_SET)
            except OSError as exc:  # the next append starts a new segment instead
                log.error("cannot cut journal segment %s back after a failed write: %s", number, exc)
                self._close_fd()
            raise
        self._size = start + len(buf)
        return number

    def applied(self, number: int, count: int = 1) -> None:
        """``count`` records of segment ``number`` are committed to DuckDB (or given up on)."""
        with self._lock:
            left = self._unapplied.get(number, 0) - count
            if left > 0:
                self._unapplied[number] = left
                return
            self._unapplied.pop(number, None)
            if number == self._number and self._fd is not None:
                return  # still being written; deleted after it is rotated out
        self._path(number).unlink(missing_ok=True)

    def applied_all(self, numbers: Iterable[int]) -> None:
        counts: dict[int, int] = {}
        for n in numbers:
            counts[n] = counts.get(n, 0) + 1
        for n, c in counts.items():
            self.applied(n, c)

    def _rotate(self) -> None:
        old = self._number if self._fd is not None else None
        self._close_fd()
        self._number += 1
        fd = os.open(self._path(self._number), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, MAGIC)
        except OSError:
            os.close(fd)
            self._path(self._number).unlink(missing_ok=True)
            raise
        self._fd, self._size = fd, len(MAGIC)
        # The directory entry of the new file must be durable before a record in it is acknowledged.
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if old is not None:
            with self._lock:
                done = old not in self._unapplied
            if done:
                self._path(old).unlink(missing_ok=True)

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None

    def close(self) -> None:
        """Stop appending; a segment with nothing left to apply goes now, others stay for the next start."""
        number = self._number
        self._close_fd()
        with self._lock:
            done = number not in self._unapplied
        if done:
            self._path(number).unlink(missing_ok=True)


def _records(data: bytes, path: Path) -> Iterable[bytes]:
    at = len(MAGIC)
    while at < len(data):
        if at + _FRAME.size > len(data):
            log.warning("journal segment %s ends in a cut record (a crash while writing it; never acknowledged)", path)
            return
        length, crc = _FRAME.unpack_from(data, at)
        payload = data[at + _FRAME.size : at + _FRAME.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            log.warning("journal segment %s ends in a cut record (a crash while writing it; never acknowledged)", path)
            return
        yield payload
        at += _FRAME.size + length
