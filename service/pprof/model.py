"""The resolved pprof model: validated, columnar, with strings as a dictionary.

Decoding resolves and checks every reference once; what leaves ``service/pprof`` is columns:
numpy arrays of ids and numbers, string columns as codes into the profile's ``strings``
dictionary (like an Arrow dictionary array: ``strings[0] == ""``, every code checked), samples
as ``offsets`` into a flat ``location_ids`` array with a ``values`` matrix. Every consumer —
validation, normalization, merge, encode — works on whole columns; a Python object per
sample or per location would cost more than the protobuf parse itself.

The small entity dataclasses (``Function``, ``Location``, …) exist to build profiles by hand
and to iterate over one comfortably; they are not how profiles are held.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from service.types import I64, U64

__all__ = [
    "Function",
    "Functions",
    "Header",
    "Label",
    "LabelSet",
    "Line",
    "Location",
    "Locations",
    "Mapping",
    "Mappings",
    "Profile",
    "Samples",
    "StringTable",
    "ValueType",
    "expand",
    "offsets_of",
]

Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class ValueType:
    type: str
    unit: str

    def __str__(self) -> str:
        return f"{self.type}/{self.unit}"


@dataclass(frozen=True, slots=True)
class Mapping:
    id: int
    start: int
    limit: int
    offset: int
    filename: str
    build_id: str
    has_functions: bool = False
    has_filenames: bool = False
    has_line_numbers: bool = False
    has_inline_frames: bool = False


@dataclass(frozen=True, slots=True)
class Function:
    id: int
    name: str
    system_name: str = ""
    filename: str = ""
    start_line: int = 0


@dataclass(frozen=True, slots=True)
class Line:
    function_id: int
    line: int = 0
    column: int = 0


@dataclass(frozen=True, slots=True)
class Location:
    id: int
    mapping_id: int  # 0 = none
    address: int
    lines: tuple[Line, ...]  # innermost (inlined) first
    is_folded: bool = False


@dataclass(frozen=True, slots=True)
class Label:
    """A pprof sample label: a string value, or a number with an optional unit."""

    key: builtins.str
    str: builtins.str = ""  # named as in profile.proto
    num: int = 0
    num_unit: builtins.str = ""


LabelSet = tuple[Label, ...]


@dataclass(frozen=True, slots=True)
class Header:
    """The fields of a profile that are not columns."""

    sample_types: tuple[ValueType, ...] = ()
    period_type: ValueType | None = None
    period: int = 0
    time_nanos: int = 0
    duration_nanos: int = 0
    drop_frames: str = ""
    keep_frames: str = ""
    comments: tuple[str, ...] = ()
    default_sample_type: str = ""
    doc_url: str = ""


class StringTable:
    """Interns strings to codes; ``table[0]`` is always ``""``."""

    __slots__ = ("index", "table")

    def __init__(self, table: Sequence[str] = ("",)) -> None:
        self.table: list[str] = list(table) or [""]
        self.index: dict[str, int] = {}
        for i, s in enumerate(self.table):
            self.index.setdefault(s, i)

    def __call__(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.table)
            self.table.append(s)
        return i


def _u64(values: Sequence[int] | npt.ArrayLike) -> U64:
    return np.asarray(values, dtype=np.uint64).reshape(-1)


def offsets_of(counts: Sequence[int] | npt.ArrayLike) -> I64:
    """Offsets of rows with these lengths: row ``i`` of a ragged column is ``values[offsets[i] : offsets[i + 1]]``.

    The one layout of every ragged column here (a sample's stack, a location's lines, a profile's rows
    in a batch), as Arrow's list arrays have it; ``offsets[-1]`` is the total.
    """
    lengths = np.asarray(counts, np.int64).reshape(-1)
    out = np.zeros(lengths.size + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def expand(starts: I64, counts: I64) -> I64:
    """The rows of ragged slices: ``range(starts[i], starts[i] + counts[i])`` concatenated, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    seg = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    return np.asarray(starts[seg] + (np.arange(total) - first[seg]), np.int64)


def _i64(values: Sequence[int] | npt.ArrayLike) -> I64:
    return np.asarray(values, dtype=np.int64).reshape(-1)


@dataclass(slots=True)
class Mappings:
    id: U64
    start: U64
    limit: U64
    offset: U64
    filename: I64  # codes into Profile.strings
    build_id: I64
    flags: npt.NDArray[np.bool_]  # (n, 4): has_functions, has_filenames, has_line_numbers, has_inline_frames

    def __len__(self) -> int:
        return int(self.id.size)

    @classmethod
    def of(cls, items: Sequence[Mapping], st: StringTable) -> Mappings:
        return cls(
            _u64([m.id for m in items]),
            _u64([m.start for m in items]),
            _u64([m.limit for m in items]),
            _u64([m.offset for m in items]),
            _i64([st(m.filename) for m in items]),
            _i64([st(m.build_id) for m in items]),
            np.array(
                [[m.has_functions, m.has_filenames, m.has_line_numbers, m.has_inline_frames] for m in items], dtype=bool
            ).reshape(-1, 4),
        )

    def entities(self, strings: Sequence[str]) -> Iterator[Mapping]:
        for i in range(len(self)):
            yield Mapping(
                int(self.id[i]),
                int(self.start[i]),
                int(self.limit[i]),
                int(self.offset[i]),
                strings[self.filename[i]],
                strings[self.build_id[i]],
                *map(bool, self.flags[i]),
            )


@dataclass(slots=True)
class Functions:
    id: U64
    name: I64  # codes into Profile.strings
    system_name: I64
    filename: I64
    start_line: I64

    def __len__(self) -> int:
        return int(self.id.size)

    @classmethod
    def of(cls, items: Sequence[Function], st: StringTable) -> Functions:
        return cls(
            _u64([f.id for f in items]),
            _i64([st(f.name) for f in items]),
            _i64([st(f.system_name) for f in items]),
            _i64([st(f.filename) for f in items]),
            _i64([f.start_line for f in items]),
        )

    def entities(self, strings: Sequence[str]) -> Iterator[Function]:
        for i in range(len(self)):
            yield Function(
                int(self.id[i]),
                strings[self.name[i]],
                strings[self.system_name[i]],
                strings[self.filename[i]],
                int(self.start_line[i]),
            )


@dataclass(slots=True)
class Locations:
    """Locations with their lines flattened: location ``i`` has lines ``line_offsets[i]:line_offsets[i+1]``."""

    id: U64
    mapping_id: U64
    address: U64
    is_folded: Bools
    line_offsets: I64
    line_function_id: U64
    line_line: I64
    line_column: I64

    def __len__(self) -> int:
        return int(self.id.size)

    @classmethod
    def of(cls, items: Sequence[Location]) -> Locations:
        offsets = offsets_of([len(loc.lines) for loc in items])
        lines = [ln for loc in items for ln in loc.lines]
        return cls(
            _u64([loc.id for loc in items]),
            _u64([loc.mapping_id for loc in items]),
            _u64([loc.address for loc in items]),
            np.array([loc.is_folded for loc in items], dtype=bool),
            offsets,
            _u64([ln.function_id for ln in lines]),
            _i64([ln.line for ln in lines]),
            _i64([ln.column for ln in lines]),
        )

    def entities(self) -> Iterator[Location]:
        for i in range(len(self)):
            a, b = int(self.line_offsets[i]), int(self.line_offsets[i + 1])
            lines = tuple(
                Line(int(f), int(ln), int(c))
                for f, ln, c in zip(self.line_function_id[a:b], self.line_line[a:b], self.line_column[a:b], strict=True)
            )
            yield Location(
                int(self.id[i]), int(self.mapping_id[i]), int(self.address[i]), lines, bool(self.is_folded[i])
            )


@dataclass(slots=True)
class Samples:
    """Samples as columns.

    Sample ``i`` has locations ``location_ids[offsets[i]:offsets[i+1]]`` (leaf first), values
    ``values[i]`` (one per sample type) and labels ``labelsets[labelset_index[i]]``;
    ``labelsets[0]`` is always the empty set.
    """

    offsets: I64
    location_ids: U64
    values: I64
    labelset_index: npt.NDArray[np.int32]
    labelsets: list[LabelSet] = field(default_factory=lambda: [()])

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @classmethod
    def empty(cls, num_types: int) -> Samples:
        return cls(
            np.zeros(1, np.int64), np.zeros(0, np.uint64), np.zeros((0, num_types), np.int64), np.zeros(0, np.int32)
        )

    @classmethod
    def of(cls, rows: Sequence[tuple[Sequence[int], Sequence[int], LabelSet]], num_types: int) -> Samples:
        """Build from ``(location_ids, values, labels)`` rows (by hand, in tests and converters)."""
        labelsets: dict[LabelSet, int] = {(): 0}
        offsets = offsets_of([len(r[0]) for r in rows])
        return cls(
            offsets,
            _u64([x for r in rows for x in r[0]]),
            np.array([list(r[1]) for r in rows], dtype=np.int64).reshape(len(rows), num_types),
            np.array([labelsets.setdefault(tuple(r[2]), len(labelsets)) for r in rows], dtype=np.int32),
            list(labelsets),
        )

    def depths(self) -> I64:
        return np.diff(self.offsets)


@dataclass(slots=True)
class Profile:
    sample_types: tuple[ValueType, ...]
    samples: Samples
    strings: list[str] = field(default_factory=lambda: [""])
    mappings: Mappings = field(default_factory=lambda: Mappings.of([], StringTable()))
    locations: Locations = field(default_factory=lambda: Locations.of([]))
    functions: Functions = field(default_factory=lambda: Functions.of([], StringTable()))
    drop_frames: str = ""
    keep_frames: str = ""
    time_nanos: int = 0
    duration_nanos: int = 0
    period_type: ValueType | None = None
    period: int = 0
    comments: tuple[str, ...] = ()
    default_sample_type: str = ""
    doc_url: str = ""

    @classmethod
    def build(
        cls,
        sample_types: Sequence[ValueType],
        samples: Samples,
        *,
        mappings: Sequence[Mapping] = (),
        locations: Sequence[Location] = (),
        functions: Sequence[Function] = (),
        **header: object,
    ) -> Profile:
        """A profile from entity objects (hand-built profiles, converters of other formats)."""
        st = StringTable()
        m, f = Mappings.of(mappings, st), Functions.of(functions, st)
        return cls(tuple(sample_types), samples, st.table, m, Locations.of(locations), f, **header)  # type: ignore[arg-type]

    def header(self) -> Header:
        return Header(
            self.sample_types,
            self.period_type,
            self.period,
            self.time_nanos,
            self.duration_nanos,
            self.drop_frames,
            self.keep_frames,
            self.comments,
            self.default_sample_type,
            self.doc_url,
        )

    def totals(self) -> I64:
        """Sum of each sample type over all samples (what ``go tool pprof -raw`` adds up)."""
        return self.samples.values.sum(axis=0, dtype=np.int64)
