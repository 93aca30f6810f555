"""The one exception tree of profstore.

Every error a caller can act on is one of these; foreign errors (zlib, protobuf, duckdb)
are re-raised as ours ``from exc`` at the boundary where they happen. HTTP status codes
are chosen in exactly one place, ``service/api/errors.py``.

    ProfstoreError
    ├── ProfileError            the bytes are not a usable pprof profile
    │   ├── DecompressError     gzip stream broken or truncated ("decompressing profile: …")
    │   ├── ParseError          not a protobuf pprof ("parsing profile: …")
    │   ├── MalformedProfile    decoded but violates pprof's rules ("malformed profile: …")
    │   └── ProfileTooLarge     over a configured size cap (compressed or uncompressed)
    ├── IncompatibleProfiles    merge of profiles with different sample/period types
    ├── InvalidRequest          a parameter a user gave is wrong (selector, time, profile type)
    │   ├── UnknownProfileType
    │   └── RequestTimeout      the request body did not arrive in time (slow client)
    ├── NotFound                a named thing (a finding id) does not exist
    ├── Unimplemented           a method or option profstore does not offer (Connect's unimplemented)
    ├── StoreError              the database refused a write or read
    └── QueryTimeout            a read ran past its time limit
"""

from __future__ import annotations

__all__ = [
    "DecompressError",
    "IncompatibleProfiles",
    "InvalidRequest",
    "MalformedProfile",
    "NotFound",
    "ParseError",
    "ProfileError",
    "ProfileTooLarge",
    "ProfstoreError",
    "QueryTimeout",
    "RequestTimeout",
    "StoreError",
    "Unimplemented",
    "UnknownProfileType",
]


class ProfstoreError(Exception):
    """Base of every error profstore raises on purpose."""


class ProfileError(ProfstoreError):
    """The input is not a profile profstore can store."""


class DecompressError(ProfileError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"decompressing profile: {detail}")


class ParseError(ProfileError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"parsing profile: {detail}")


class MalformedProfile(ProfileError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"malformed profile: {detail}")


class ProfileTooLarge(ProfileError):
    """Over a size cap; carries the cap so the API can say it."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"profile too large: {what} exceeds the limit of {limit} bytes")
        self.limit = limit


class IncompatibleProfiles(ProfstoreError):
    pass


class InvalidRequest(ProfstoreError):
    pass


class UnknownProfileType(InvalidRequest):
    pass


class RequestTimeout(InvalidRequest):
    pass


class NotFound(ProfstoreError):
    pass


class Unimplemented(ProfstoreError):
    pass


class StoreError(ProfstoreError):
    pass


class QueryTimeout(ProfstoreError):
    pass
