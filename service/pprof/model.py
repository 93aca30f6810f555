"""The resolved pprof model: strings are strings, references are ids, samples are columns.

Decoding resolves every string-table index once, so nothing outside ``service/pprof`` ever
sees one. Samples are held as numpy columns (``offsets`` into a flat ``location_ids`` array,
a ``values`` matrix, a label-set index) because every consumer — validation, normalization,
merge, encode — works on whole columns, and per-sample Python objects would cost more than
the protobuf parse itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "Function",
    "Label",
    "LabelSet",
    "Line",
    "Location",
    "Mapping",
    "Profile",
    "Samples",
    "ValueType",
]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


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
    has_functions: bool
    has_filenames: bool
    has_line_numbers: bool
    has_inline_frames: bool


@dataclass(frozen=True, slots=True)
class Function:
    id: int
    name: str
    system_name: str
    filename: str
    start_line: int


@dataclass(frozen=True, slots=True)
class Line:
    function_id: int
    line: int
    column: int = 0


@dataclass(frozen=True, slots=True)
class Location:
    id: int
    mapping_id: int  # 0 = none
    address: int
    lines: tuple[Line, ...]  # innermost first
    is_folded: bool = False


@dataclass(frozen=True, slots=True)
class Label:
    """A pprof sample label: a string value, or a number with an optional unit."""

    key: str
    str: str = ""
    num: int = 0
    num_unit: str = ""


LabelSet = tuple[Label, ...]


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
            offsets=np.zeros(1, np.int64),
            location_ids=np.zeros(0, np.uint64),
            values=np.zeros((0, num_types), np.int64),
            labelset_index=np.zeros(0, np.int32),
        )

    def depths(self) -> I64:
        return np.diff(self.offsets)


@dataclass(slots=True)
class Profile:
    sample_types: tuple[ValueType, ...]
    samples: Samples
    mappings: tuple[Mapping, ...] = ()
    locations: tuple[Location, ...] = ()
    functions: tuple[Function, ...] = ()
    drop_frames: str = ""
    keep_frames: str = ""
    time_nanos: int = 0
    duration_nanos: int = 0
    period_type: ValueType | None = None
    period: int = 0
    comments: tuple[str, ...] = ()
    default_sample_type: str = ""
    doc_url: str = ""

    def totals(self) -> I64:
        """Sum of each sample type over all samples (what ``go tool pprof -raw`` adds up)."""
        return self.samples.values.sum(axis=0, dtype=np.int64)

    def default_type_index(self) -> int:
        """Index of the default sample type: the named one, else the last (pprof's rule)."""
        for i, st in enumerate(self.sample_types):
            if st.type == self.default_sample_type:
                return i
        return len(self.sample_types) - 1
